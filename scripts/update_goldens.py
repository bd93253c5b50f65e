"""Write tests/golden/<template>-<version>.json from each template's example params."""

from __future__ import annotations

import json
from pathlib import Path

from engine.catalog.catalog import load_catalog
from engine.catalog.render import TemplateGraphs, example_params

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    cat = load_catalog(ROOT / "catalog.yaml")
    graphs = TemplateGraphs(cat)
    for t in cat.templates:
        r = graphs.render(t, example_params(t))
        out = ROOT / "tests" / "golden" / f"{t.name}-{t.version}.json"
        out.write_text(
            json.dumps({"graph": r.graph, "sha256": r.sha256}, indent=2, sort_keys=True) + "\n"
        )
        print(f"wrote {out.relative_to(ROOT)}")
