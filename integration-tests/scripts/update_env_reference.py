#!/usr/bin/env python3
"""Regenerate the env-var reference in README.md and the env maps in the Helm
chart's values.yaml from `cnflow config --reference --json` (the config structs).
Usage: python3 integration-tests/scripts/update_env_reference.py [path/to/cnflow]"""
import json, os, re, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/cnflow")
# Which chart env map each component's variables belong in.
TARGETS = {"agent": ["agent"], "telemetry": ["agent"], "k8s": ["agent"], "export": ["agent", "gateway"], "gateway": ["gateway"], "self-telemetry": ["agent", "gateway"], "standard": ["agent", "gateway"], "sampling": ["agent", "gateway"]}
# Per-signal OTLP variants (27 of them) are in the README table only; they can still be set in the env maps.
# Set by the chart templates themselves (downward API / derived from other values).
TEMPLATE_SET = {"CNFLOW_NODE_NAME", "CNFLOW_HEALTH_ADDR", "KUBERNETES_SERVICE_HOST"}

ref = json.loads(subprocess.check_output([BIN, "config", "--reference", "--json"]))
md = subprocess.check_output([BIN, "config", "--reference"]).decode()

readme = open(os.path.join(ROOT, "README.md")).read()
readme = re.sub(r"(<!-- env-reference:begin -->\n).*?(<!-- env-reference:end -->)", lambda m: m.group(1) + md + m.group(2), readme, flags=re.S)
open(os.path.join(ROOT, "README.md"), "w").write(readme)

values_path = os.path.join(ROOT, "charts/cnflow/values.yaml")
values = open(values_path).read()
for target in ("agent", "gateway"):
    lines = []
    for v in ref:
        if target in TARGETS.get(v["component"], []) and v["name"] not in TEMPLATE_SET:
            default = f" (default {v['default']})" if v["default"] else ""
            help_ = v["help"].replace("\n", " ")
            lines.append(f"    # {help_}{default}\n    {v['name']}: \"\"\n")
    block = "".join(lines)
    values = re.sub(rf"(    #@{target}-env-begin\n).*?(    #@{target}-env-end)", lambda m: m.group(1) + block + m.group(2), values, flags=re.S)
open(values_path, "w").write(values)
print(f"{len(ref)} variables written to README.md and values.yaml")
