"""Write features/backbones/catalog.json: one record per keras.applications constructor.

Every field is derived from the installed Keras (``bneck.features.backbones.discover``):
sizes and the weights file from what the constructor asks Keras for, the rest from its
graph. Rerun after upgrading Keras; ``tests/features/backbones/test_catalog.py`` checks
the file against the installed Keras for the smallest model of every family.

    .venv/bin/python scripts/backbone_catalog.py            # all constructors
    .venv/bin/python scripts/backbone_catalog.py VGG16 ...  # only these (the rest are kept)
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

from bneck.features.backbones.catalog import CATALOG_FILE
from bneck.features.backbones.discover import constructors, derive_record


def main(names: list[str]) -> None:
    import keras

    path = Path(CATALOG_FILE)
    records = json.loads(path.read_text())["backbones"] if path.exists() and names else {}
    for name in names or constructors():
        start = time.perf_counter()
        records[name.lower()] = derive_record(name)
        keras.backend.clear_session()
        gc.collect()
        print(f"{name:20s} {time.perf_counter() - start:6.1f} s", flush=True)
    body = {"keras": keras.__version__, "backbones": dict(sorted(records.items()))}
    path.write_text(json.dumps(body, indent=1) + "\n")
    print(f"wrote {len(records)} records to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
