"""The built-in new domains, never in the built-in model's training mixture: legal contracts,
customer-support tickets and recipe cards. Each has a document generator (the domain's training
text) and a cloze (prompt: a text up to a fixed phrase; answer: that phrase).
"""

from __future__ import annotations

import random

from retain.builtin.tasks.common import Item

# ---------------------------------------------------------------- new domain 1: legal contracts
_PARTIES = ["the Licensor", "the Licensee", "the Company", "the Contractor", "the Supplier",
            "the Customer", "the Tenant", "the Landlord", "the Buyer", "the Seller"]
_STATES = ["Delaware", "New York", "California", "Texas", "Ohio", "Nevada", "Oregon", "Virginia"]
# (title, clause with slots {A} {a} {b} {n} {s} {amt}, the fixed phrase that the cloze asks for)
LEGAL_CLAUSES = [
    ("Indemnification", "{A} shall indemnify and hold harmless {b} from and against any and all "
     "claims, losses and damages arising out of this Agreement.", "hold harmless"),
    ("Governing Law", "This Agreement shall be governed by and construed in accordance with the "
     "laws of the State of {s}.", "construed in accordance"),
    ("Payment", "{A} shall pay {b} the sum of ${amt} within {n} days of receipt of a valid "
     "invoice.", "days of receipt"),
    ("Termination", "Either party may terminate this Agreement upon {n} days' prior written notice "
     "to the other party.", "prior written notice"),
    ("Confidentiality", "{A} shall keep all Confidential Information in strict confidence and shall "
     "not disclose it to any third party.", "strict confidence"),
    ("Limitation of Liability", "In no event shall {a} be liable for any indirect, incidental or "
     "consequential damages.", "incidental or consequential"),
    ("Entire Agreement", "This Agreement constitutes the entire agreement between the parties and "
     "supersedes all prior agreements and understandings.", "supersedes all prior"),
    ("Force Majeure", "Neither party shall be liable for any failure or delay in performance caused "
     "by a Force Majeure Event.", "delay in performance"),
    ("Assignment", "{A} may not assign this Agreement without the prior written consent of {b}.",
     "prior written consent"),
    ("Notices", "Any notice under this Agreement shall be in writing and delivered to the address "
     "of {b} set out above.", "in writing and"),
    ("Severability", "If any provision of this Agreement is held invalid, the remaining provisions "
     "shall continue in full force and effect.", "full force and"),
    ("Warranty", "{A} warrants that the services will be performed in a professional and "
     "workmanlike manner.", "professional and workmanlike"),
]


def _fill(tpl: str, rng: random.Random) -> str:
    a, b = rng.sample(_PARTIES, 2)
    return tpl.format(A=a[0].upper() + a[1:], a=a, b=b, n=rng.choice([10, 15, 30, 45, 60, 90]),
                      s=rng.choice(_STATES), amt=f"{rng.randrange(1, 100) * 1000:,}")


def legal_document(rng: random.Random) -> Item:
    """A contract of 3-6 numbered sections: the built-in new domain's training text."""
    picks = rng.sample(LEGAL_CLAUSES, rng.randint(3, 6))
    text = " ".join(f"{i}. {title}. {_fill(tpl, rng)}" for i, (title, tpl, _) in
                    enumerate(picks, 1))
    return Item(f"legal:{text}", text=text)


def legal_cloze(rng: random.Random) -> Item:
    """Prompt: a clause up to its fixed phrase; answer: that phrase (raw text, no chat)."""
    title, tpl, phrase = rng.choice(LEGAL_CLAUSES)
    clause = f"{rng.randint(1, 9)}. {title}. {_fill(tpl, rng)}"
    i = clause.index(" " + phrase)
    return Item(f"legalcloze:{clause}", prompt=clause[:i], answer=" " + phrase,
                check={"kind": "prefix"})


# ---------------------------------------------------------------- new domain 2: customer support
_PRODUCTS = ["router", "blender", "headset", "printer", "smart watch", "coffee maker", "keyboard",
             "vacuum", "speaker", "tablet"]
_ISSUES = [
    ("will not turn on", "hold the power button for ten seconds, then plug it into another outlet"),
    ("keeps disconnecting", "restart it, move it closer to the router and update its firmware"),
    ("arrived damaged", "reply with a photo of the damage and we will ship a replacement"),
    ("is making a loud noise", "switch it off, check for anything stuck inside and clean the vents"),
    ("stopped charging", "try another cable and clean the charging port gently"),
    ("was charged twice", "allow five days for the refund of the extra charge to appear"),
]


def support_item(rng: random.Random) -> Item:
    product = rng.choice(_PRODUCTS)
    issue, fix = rng.choice(_ISSUES)
    order = rng.randrange(10000, 99999)
    prompt = f"Customer: My {product} {issue}. Order {order}."
    answer = (f"Agent: Thank you for contacting us about your {product}. Please {fix}. "
              f"Your order {order} is covered by our warranty.")
    return Item(f"support:{product}:{issue}:{order}", text=f"{prompt}\n{answer}")


def support_cloze(rng: random.Random) -> Item:
    """Prompt: a ticket and the agent's opening; answer: the first words of the fix."""
    product = rng.choice(_PRODUCTS)
    issue, fix = rng.choice(_ISSUES)
    order = rng.randrange(10000, 99999)
    prompt = (f"Customer: My {product} {issue}. Order {order}.\nAgent: Thank you for contacting "
              f"us about your {product}. Please")
    return Item(f"supportcloze:{product}:{issue}:{order}", prompt=prompt,
                answer=" " + " ".join(fix.split()[:2]).rstrip(",;"), check={"kind": "prefix"})


# ---------------------------------------------------------------- new domain 3: recipes
# A recipe card: a title line, a serving/time line, an ingredient list with quantities and units,
# numbered method steps. Kitchen words only, so it shares little vocabulary with contracts and
# tickets. Each ingredient has a fixed preparation that the cloze asks for.
_DISH_STYLES = ["Smoky", "Zesty", "Creamy", "Spiced", "Roasted", "Golden", "Herbed", "Rustic"]
_DISH_BASES = ["Chickpea", "Lentil", "Mushroom", "Chicken", "Salmon", "Tofu", "Pumpkin",
               "Eggplant"]
_DISH_KINDS = ["Stew", "Curry", "Soup", "Traybake", "Risotto", "Skillet", "Salad", "Pilaf"]
# (amounts, unit, ingredient, its fixed preparation: the phrase the cloze asks for)
RECIPE_INGREDIENTS = [
    ((2, 3, 4), "cloves", "garlic", "finely minced"),
    ((1, 2), "", "onion", "peeled and diced"),
    ((400, 800), "g", "chickpeas", "drained and rinsed"),
    ((2, 3, 4), "cm", "fresh ginger", "peeled and grated"),
    ((1, 2), "", "lemon", "zested and juiced"),
    ((400, 600), "g", "ripe tomatoes", "roughly chopped"),
    ((1,), "bunch", "parsley", "leaves picked"),
    ((2, 3), "", "carrots", "cut into batons"),
    ((2, 3, 4), "", "eggs", "lightly beaten"),
    ((150, 200, 250), "g", "baby spinach", "washed and dried"),
    ((250, 300), "g", "mushrooms", "wiped and quartered"),
    ((200, 300), "g", "basmati rice", "rinsed until clear"),
    ((1, 2), "", "red chilli", "seeded and sliced"),
    ((50, 80), "g", "almonds", "toasted and crushed"),
    ((200, 400), "ml", "coconut milk", "well shaken"),
    ((1, 2), "tsp", "cumin seeds", "lightly toasted"),
]
# Method steps in cooking order; {a} {b} name listed ingredients, {n} {t} {v} {r} are numbers.
RECIPE_STEPS = [
    "Preheat the oven to {t} C and line a tray with baking paper.",
    "Warm 2 tbsp olive oil in a heavy pan over medium heat until it shimmers.",
    "Add the {a} and saute for {n} minutes until soft and translucent.",
    "Stir in the {b}, pour in {v} ml water and bring to a rolling boil.",
    "Lower the heat, cover and simmer for {n} minutes, stirring occasionally.",
    "Roast for {n} minutes until golden and caramelised at the edges.",
    "Season generously with salt and black pepper, then rest for {r} minutes.",
    "Serve warm, garnished with the {a} and a drizzle of yogurt.",
]


def _ingredient_line(ing: tuple, rng: random.Random) -> str:
    amounts, unit, name, prep = ing
    qty = f"{rng.choice(amounts)} {unit}".rstrip()
    return f"- {qty} {name}, {prep}"


def _recipe_head(rng: random.Random) -> str:
    title = " ".join(rng.choice(words) for words in (_DISH_STYLES, _DISH_BASES, _DISH_KINDS))
    return (f"{title}\nServes {rng.randint(2, 6)} | Prep {rng.choice([10, 15, 20])} min | Cook "
            f"{rng.choice(range(20, 65, 5))} min\nIngredients:\n")


def recipe_document(rng: random.Random) -> Item:
    """A recipe card of 3-5 ingredients and 3-5 method steps: the third domain's training text."""
    head = _recipe_head(rng)
    ings = rng.sample(RECIPE_INGREDIENTS, rng.randint(3, 5))
    names = [ing[2] for ing in ings]
    steps = [RECIPE_STEPS[i] for i in sorted(rng.sample(range(len(RECIPE_STEPS)),
                                                        rng.randint(3, 5)))]
    method = "\n".join(f"{i}. " + s.format(
        a=rng.choice(names), b=rng.choice(names), n=rng.choice([5, 8, 10, 15, 20, 25]),
        t=rng.choice([180, 190, 200, 220]), v=rng.choice([250, 500, 750]),
        r=rng.choice([2, 5, 10])) for i, s in enumerate(steps, 1))
    text = (head + "\n".join(_ingredient_line(ing, rng) for ing in ings) + "\nMethod:\n"
            + method)
    return Item(f"recipes:{text}", text=text)


def recipe_cloze(rng: random.Random) -> Item:
    """Prompt: a recipe card up to an ingredient's comma (after 0-1 whole ingredient lines);
    answer: that ingredient's fixed preparation (raw text, no chat)."""
    head = _recipe_head(rng)
    ings = rng.sample(RECIPE_INGREDIENTS, rng.randint(1, 2))
    lines = [_ingredient_line(ing, rng) for ing in ings]
    prep = ings[-1][3]
    prompt = head + "\n".join(lines)[: -len(" " + prep)]
    return Item(f"recipescloze:{prompt}", prompt=prompt, answer=" " + prep,
                check={"kind": "prefix"})
