"""tests/fixtures/regenerate_schema.py on a small assembly packed as the real wheel is.

The assembly below has the shape cdktn-provider-google ships: a resource class whose
constructor links to the provider release's documentation, a config struct with a required
argument, a map, a block given once and a repeatable block (jsii union with a list).
"""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from harness import REPO

RELEASE = "https://registry.terraform.io/providers/hashicorp/google/9.1.0/docs"
PREFIX = "@cdktn/provider-google.computeThing"


def regenerate() -> ModuleType:
    path = REPO / "tests" / "fixtures" / "regenerate_schema.py"
    spec = importlib.util.spec_from_file_location("regenerate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prop(
    name: str, hcl: str, kind: dict[str, Any], *, optional: bool, summary: str = ""
) -> dict[str, Any]:
    anchor = f"compute_thing#{hcl} ComputeThing#{hcl}"
    link = f"Docs at Terraform Registry: {{@link {RELEASE}/resources/{anchor}}}"
    docs = {"summary": summary or f"The {hcl}.", "remarks": link}
    return {"name": name, "type": kind, "optional": optional, "docs": docs}


def struct(fqn: str, *properties: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "interface", "datatype": True, "fqn": fqn, "properties": list(properties)}


def assembly(version: str = "9.1.0") -> dict[str, Any]:
    repeatable = {
        "union": {
            "types": [
                {"fqn": "cdktn.IResolvable"},
                {"collection": {"kind": "array", "elementtype": {"fqn": f"{PREFIX}.Rule"}}},
            ]
        }
    }
    flag = {"union": {"types": [{"primitive": "boolean"}, {"fqn": "cdktn.IResolvable"}]}}
    summary = (
        f"Create a new {{@link https://registry.terraform.io/providers/hashicorp/google/{version}"
        "/docs/resources/compute_thing google_compute_thing} Resource."
    )
    return {
        "version": "42.0.0",
        "types": {
            f"{PREFIX}.ComputeThing": {
                "kind": "class",
                "initializer": {
                    "docs": {"summary": summary},
                    "parameters": [
                        {"name": "scope"},
                        {"name": "config", "type": {"fqn": f"{PREFIX}.Config"}},
                    ],
                },
            },
            f"{PREFIX}.Config": struct(
                f"{PREFIX}.Config",
                prop("name", "name", {"primitive": "string"}, optional=False),
                prop(
                    "labels",
                    "labels",
                    {"collection": {"kind": "map", "elementtype": {"primitive": "string"}}},
                    optional=True,
                ),
                prop("ipv6Enabled", "ipv6_enabled", flag, optional=True),
                prop(
                    "bootDisk",
                    "boot_disk",
                    {"fqn": f"{PREFIX}.BootDisk"},
                    optional=False,
                    summary="boot_disk block.",
                ),
                prop("rule", "rule", repeatable, optional=True, summary="rule block."),
            ),
            f"{PREFIX}.BootDisk": struct(
                f"{PREFIX}.BootDisk",
                prop("sizeGb", "size_gb", {"primitive": "number"}, optional=True),
            ),
            f"{PREFIX}.Rule": struct(
                f"{PREFIX}.Rule",
                prop(
                    "ports",
                    "ports",
                    {"collection": {"kind": "array", "elementtype": {"primitive": "string"}}},
                    optional=False,
                ),
            ),
        },
    }


def wheel(tmp_path: Path, package_version: str = "9.1.0") -> Path:
    """A wheel holding _jsii/provider-google@42.0.0.jsii.tgz with .jsii and package.json."""
    package_json = {
        "cdktn": {
            "provider": {
                "name": "registry.terraform.io/hashicorp/google",
                "version": package_version,
            }
        }
    }
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, document in (
            ("package/.jsii", assembly()),
            ("package/package.json", package_json),
        ):
            data = json.dumps(document).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "cdktn_provider_google-42.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr(
            "cdktn_provider_google/_jsii/provider-google@42.0.0.jsii.tgz", archive.getvalue()
        )
    return path


def test_extracts_arguments_and_blocks_with_their_hcl_names() -> None:
    version, schema = regenerate().extract(
        assembly(), {"resource": {"google_compute_thing"}, "data": set()}
    )
    assert version == "9.1.0"
    assert schema == {
        "resource": {
            "google_compute_thing": {
                "arguments": {
                    "ipv6_enabled": {"required": False, "type": "bool"},
                    "labels": {"required": False, "type": "map(string)"},
                    "name": {"required": True, "type": "string"},
                },
                "blocks": {
                    "boot_disk": {
                        "required": True,
                        "repeatable": False,
                        "arguments": {"size_gb": {"required": False, "type": "number"}},
                        "blocks": {},
                    },
                    "rule": {
                        "required": False,
                        "repeatable": True,
                        "arguments": {"ports": {"required": True, "type": "list(string)"}},
                        "blocks": {},
                    },
                },
            }
        },
        "data": {},
    }


def test_a_type_the_release_lacks_stops_the_regeneration() -> None:
    with pytest.raises(SystemExit, match="google_compute_thingz"):
        regenerate().extract(assembly(), {"resource": {"google_compute_thingz"}, "data": set()})


def test_reads_the_assembly_and_release_out_of_the_wheel(tmp_path: Path) -> None:
    script = regenerate()
    name, archive = script.jsii_archive(wheel(tmp_path))
    assert name.endswith("provider-google@42.0.0.jsii.tgz")
    read, package_json = script.read_package(archive)
    assert read == assembly()
    assert package_json["cdktn"]["provider"]["version"] == "9.1.0"


def module_using_the_thing(tmp_path: Path) -> Path:
    module = tmp_path / "module"
    module.mkdir()
    (module / "main.tf").write_text('resource "google_compute_thing" "one" {\n  name = "x"\n}\n')
    return module


def test_writes_the_fixture_with_the_release_it_comes_from(tmp_path: Path) -> None:
    output = tmp_path / "schema.json"
    regenerate().write_schema(wheel(tmp_path), module_using_the_thing(tmp_path), output)
    written = json.loads(output.read_text())
    assert written["provider"] == "registry.terraform.io/hashicorp/google"
    assert written["version"] == "9.1.0"
    assert written["from"] == "cdktn-provider-google 42.0.0 (provider-google@42.0.0.jsii.tgz)"
    assert set(written["resource"]) == {"google_compute_thing"}


def test_a_package_whose_release_and_links_disagree_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "schema.json"
    with pytest.raises(SystemExit, match=r"names provider 9\.2\.0, the assembly links 9\.1\.0"):
        regenerate().write_schema(
            wheel(tmp_path, package_version="9.2.0"), module_using_the_thing(tmp_path), output
        )
    assert not output.exists()
