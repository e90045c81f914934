"""peft's merge tensor math (``peft.utils.merge_utils``) without importing all of peft.

``import peft`` loads transformers' model stack (about 130 MB resident and seconds of start-up on
a small machine), while ``merge_utils`` needs only torch; a streaming merge of a 500 MB model
should not pay that. So the file is loaded on its own; when peft is already imported, or the file
cannot stand alone (a future peft), the ordinary import is used.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def load_merge_utils() -> ModuleType:
    if "peft" in sys.modules:
        from peft.utils import merge_utils

        return merge_utils
    name = "retain.merging._peft_merge_utils"
    if name in sys.modules:
        return sys.modules[name]
    try:
        peft_spec = importlib.util.find_spec("peft")  # locates the package, does not import it
        path = peft_spec.submodule_search_locations[0] + "/utils/merge_utils.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - any failure: the ordinary (heavier) import
        from peft.utils import merge_utils

        return merge_utils
    sys.modules[name] = module
    return module


merge_utils = load_merge_utils()
