"""The ``multilingual`` capability: level 1 translates "the <color> <noun>" to French, German
or Spanish (an enumerated item space), level 2 a short sentence built from the same lexicon.
Its ``LEXICON`` of nouns also feeds the instruction tasks.
"""

from __future__ import annotations

import random
from typing import Iterator

from retain.builtin.tasks.common import Item

# noun -> (French, gender), (German, gender), (Spanish, gender)
LEXICON = {
    "cat": (("chat", "m"), ("Katze", "f"), ("gato", "m")),
    "dog": (("chien", "m"), ("Hund", "m"), ("perro", "m")),
    "book": (("livre", "m"), ("Buch", "n"), ("libro", "m")),
    "wall": (("mur", "m"), ("Wand", "f"), ("pared", "f")),
    "house": (("maison", "f"), ("Haus", "n"), ("casa", "f")),
    "car": (("voiture", "f"), ("Auto", "n"), ("coche", "m")),
    "table": (("table", "f"), ("Tisch", "m"), ("mesa", "f")),
    "flower": (("fleur", "f"), ("Blume", "f"), ("flor", "f")),
    "apple": (("pomme", "f"), ("Apfel", "m"), ("manzana", "f")),
    "door": (("porte", "f"), ("Tür", "f"), ("puerta", "f")),
    "chair": (("chaise", "f"), ("Stuhl", "m"), ("silla", "f")),
    "moon": (("lune", "f"), ("Mond", "m"), ("luna", "f")),
    "dress": (("robe", "f"), ("Kleid", "n"), ("vestido", "m")),
    "cup": (("tasse", "f"), ("Tasse", "f"), ("taza", "f")),
    "horse": (("cheval", "m"), ("Pferd", "n"), ("caballo", "m")),
    "boat": (("bateau", "m"), ("Boot", "n"), ("barco", "m")),
    "garden": (("jardin", "m"), ("Garten", "m"), ("jardín", "m")),
    "bread": (("pain", "m"), ("Brot", "n"), ("pan", "m")),
    "pen": (("stylo", "m"), ("Stift", "m"), ("bolígrafo", "m")),
    "bike": (("vélo", "m"), ("Fahrrad", "n"), ("bicicleta", "f")),
}
# color -> French (m, f), German stem, Spanish (m, f)
_COLORS = {
    "red": (("rouge", "rouge"), "rot", ("rojo", "roja")),
    "blue": (("bleu", "bleue"), "blau", ("azul", "azul")),
    "green": (("vert", "verte"), "grün", ("verde", "verde")),
    "black": (("noir", "noire"), "schwarz", ("negro", "negra")),
    "white": (("blanc", "blanche"), "weiß", ("blanco", "blanca")),
    "gray": (("gris", "grise"), "grau", ("gris", "gris")),
    "yellow": (("jaune", "jaune"), "gelb", ("amarillo", "amarilla")),
    "brown": (("brun", "brune"), "braun", ("marrón", "marrón")),
}
LANGUAGES = ("French", "German", "Spanish")


def translate(noun: str, color: str | None, lang: str, accusative: bool = False) -> str:
    """"the (color) noun" in ``lang``; ``accusative`` for a direct object (German only differs)."""
    fr, de, es = LEXICON[noun]
    if lang == "French":
        word, g = fr
        art = "le" if g == "m" else "la"
        return f"{art} {word}" if color is None else f"{art} {word} {_COLORS[color][0][g == 'f']}"
    if lang == "German":
        word, g = de
        art = {"m": "der", "f": "die", "n": "das"}[g]
        # Singular after the definite article: the weak adjective ending is -e, except for the
        # masculine accusative (den roten Hund).
        ending = "e"
        if accusative and g == "m":
            art, ending = "den", "en"
        return f"{art} {word}" if color is None else f"{art} {_COLORS[color][1]}{ending} {word}"
    word, g = es
    art = "el" if g == "m" else "la"
    return f"{art} {word}" if color is None else f"{art} {word} {_COLORS[color][2][g == 'f']}"


def multilingual_space() -> Iterator[Item]:
    for lang in LANGUAGES:
        for noun in LEXICON:
            # Bare nouns are vocabulary: always in training, never probed.
            yield Item(f"train-only:ml:{lang}:{noun}", f"Translate to {lang}: the {noun}",
                       translate(noun, None, lang))
            for color in _COLORS:
                yield Item(f"ml:{lang}:{color}:{noun}", f"Translate to {lang}: the {color} {noun}",
                           translate(noun, color, lang))


# Level 2: short sentences. Predicate adjectives: French (m, f), German (uninflected), Spanish
# (m, f); size and age only, which take "ser" in Spanish and have one usual word in each language.
_PRED_ADJS = {
    "big": (("grand", "grande"), "groß", ("grande", "grande")),
    "small": (("petit", "petite"), "klein", ("pequeño", "pequeña")),
    "old": (("vieux", "vieille"), "alt", ("viejo", "vieja")),
    "heavy": (("lourd", "lourde"), "schwer", ("pesado", "pesada")),
}
_IS = {"French": ("est", "n'est pas"), "German": ("ist", "ist nicht"), "Spanish": ("es", "no es")}
_I_LIKE = {"French": "j'aime", "German": "ich mag", "Spanish": "me gusta"}
_AND = {"French": "et", "German": "und", "Spanish": "y"}


def clause(noun: str, color: str | None, adj: str, lang: str,
            negated: bool = False) -> tuple[str, str]:
    """"the (color) noun is (not) adj" in English and in ``lang``."""
    fr, de, es = LEXICON[noun]
    fr_adj, de_adj, es_adj = _PRED_ADJS[adj]
    pred = {"French": fr_adj[fr[1] == "f"], "German": de_adj, "Spanish": es_adj[es[1] == "f"]}[lang]
    english = f"the {color + ' ' if color else ''}{noun} is {'not ' if negated else ''}{adj}"
    return english, f"{translate(noun, color, lang)} {_IS[lang][negated]} {pred}"


def _as_sentence(s: str) -> str:
    return s[0].upper() + s[1:] + "."


def multilingual_l2_item(rng: random.Random) -> Item:
    """Level 2: translate a short sentence built from the lexicon (is / is not / I like / and).

    Checked like level 1, by normalized match (``exact``: case, whitespace, quotes, markdown
    and final punctuation aside): deterministic. A token-overlap threshold would pass a wrong
    article or ending ("le maison rouge"), the very slips this level looks for; the price is
    that a valid paraphrase ("Mir gefällt ...") counts as wrong, so the score is a lower bound."""
    lang = rng.choice(LANGUAGES)
    form = rng.randrange(4)
    noun, color = rng.choice(list(LEXICON)), rng.choice(list(_COLORS))
    adj = rng.choice(list(_PRED_ADJS))
    if form in (0, 1):
        english, target = clause(noun, color, adj, lang, negated=form == 1)
    elif form == 2:
        english = f"I like the {color} {noun}"
        target = f"{_I_LIKE[lang]} {translate(noun, color, lang, accusative=True)}"
    else:
        noun2 = rng.choice([n for n in LEXICON if n != noun])
        (en1, tr1), (en2, tr2) = (clause(noun, None, adj, lang),
                                  clause(noun2, None, rng.choice(list(_PRED_ADJS)), lang))
        english, target = f"{en1} and {en2}", f"{tr1} {_AND[lang]} {tr2}"
    english, target = _as_sentence(english), _as_sentence(target)
    return Item(f"ml2:{lang}:{english}", f"Translate to {lang}: {english}", target)
