"""The Kubernetes base job template for GPU work pools, rendered as a Prefect worker renders it and checked against the
Kubernetes schema (kubernetes-validate, strict: an unknown field is an error)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version
from prefect.utilities.templating import apply_values

TEMPLATE = Path(__file__).resolve().parents[2] / "deployments" / "kubernetes-gpu-job.json"


def _render(template: dict, **values) -> dict:
    """The job manifest a worker submits: the template filled with the variables' defaults (and a flow run's values),
    then the worker's own additions (the environment and the flow-run command in the first container)."""
    variables = template["variables"]["properties"]
    filled = {name: spec["default"] for name, spec in variables.items() if "default" in spec}
    filled |= {"name": "retrain-creditmix-x7k2", "labels": {"prefect.io/flow-run-id": "1234"}, "command": "prefect flow-run execute"}
    config = apply_values(copy.deepcopy(template["job_configuration"]), filled | values)
    manifest = config["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in config["env"].items()]
    container["args"] = shlex.split(config["command"])
    return manifest


def test_the_gpu_job_is_a_valid_kubernetes_job_with_a_gpu_and_the_shared_volume():
    template = json.loads(TEMPLATE.read_text())
    jsonschema.Draft202012Validator.check_schema(template["variables"])  # the form the Prefect UI renders
    placeholders = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(template["variables"]["properties"]), placeholders - set(template["variables"]["properties"])

    manifest = _render(template)
    kubernetes_validate.validate(manifest, latest_version(), strict=True)
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    [volume], [mount] = pod["volumes"], container["volumeMounts"]
    assert volume["name"] == mount["name"] and volume["persistentVolumeClaim"]["claimName"] == "distill-slm-shared"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DISTILL_SLM_RUNS_DIR"].startswith(mount["mountPath"] + "/")  # the registry is on the shared volume

    cpu_only = _render(template, gpus=0, image="registry.local/distill-slm:1.2")
    kubernetes_validate.validate(cpu_only, latest_version(), strict=True)


def test_a_misspelt_field_is_caught_by_the_check():
    manifest = _render(json.loads(TEMPLATE.read_text()))
    manifest["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = manifest["spec"]["template"]["spec"]["containers"][0].pop(
        "volumeMounts"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, latest_version(), strict=True)
