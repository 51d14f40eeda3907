"""Bad cluster files: every one is refused with exit code 2 at file:line and names the field.

Each file in spec_corpus/ is wrong in one way (the comment on its first line says how). A few
more are written by the tests because they must hold bytes a text file should not. Most cases
call the loader in-process; a representative dozen run the real CLI in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO

from dlvm_cluster.errors import SpecError
from dlvm_cluster.providers import load_spec, load_spec_text
from dlvm_cluster.spec.load import MAX_FILE_BYTES

CORPUS = Path(__file__).resolve().parent / "spec_corpus"

# file stem -> (line the error must point at, field path or a fragment of the message)
EXPECTED: dict[str, tuple[int, str]] = {
    # YAML syntax and structure
    "syntax_unclosed_flow_mapping": (4, "flow mapping that starts at line 3"),
    "syntax_unclosed_quote": (7, "quoted scalar that starts at line 2"),
    "syntax_bad_indentation": (5, "YAML syntax error"),
    "syntax_colon_in_plain_value": (2, "mapping values are not allowed"),
    "syntax_unclosed_flow_sequence": (8, "expected ',' or ']'"),
    "multiple_documents": (7, "expected a single document"),
    "tab_indentation": (4, "tab character"),
    "duplicate_key_top": (7, "the key 'name' appears twice"),
    "duplicate_key_nested": (7, "the key 'count' appears twice"),
    "empty": (1, "the file is empty"),
    "whitespace_only": (1, "the file is empty"),
    "comments_only": (1, "only comments"),
    "top_level_list": (3, "not a list"),
    "top_level_scalar": (3, "not the str 'demo'"),
    "alias": (7, "aliases"),
    "billion_laughs": (4, "aliases"),
    "undefined_alias": (7, "aliases"),
    "python_tag": (2, "tag !!python/object/apply:os.system"),
    "custom_tag": (7, "tag !include"),
    "integer_key": (7, "nodes: keys must be plain text, not the int 7"),
    "null_key": (7, "keys must be plain text, not nothing"),
    "markup_in_key": (7, "unknown key '[/bold]'"),
    "emoji_code_in_key": (7, "unknown key ':rocket:'"),
    # unknown and misspelt keys at every depth
    "unknown_key_top": (7, "bogus"),
    "misspelt_provider": (3, "provder"),
    "misspelt_nodes": (5, "ndoes"),
    "misspelt_setup": (7, "setpu"),
    "unknown_key_local_provider": (5, "provider.region"),
    "misspelt_ssh_hosts": (5, "provider.hsots"),
    "misspelt_ssh_host_port": (7, "provider.hosts[1].prot"),
    "misspelt_gcp_zones": (7, "provider.zonse"),
    "misspelt_nodes_count": (6, "nodes.cuont"),
    "unknown_key_nodes": (7, "nodes.gpus"),
    # storage, autostop and the job's recovery keys
    "storage_mount_relative": (8, "storage[0].mount"),
    "storage_mount_over_etc": (8, "holds the node's own system"),
    "storage_bucket_not_gs": (8, "gs://BUCKET/PREFIX"),
    "storage_mounts_overlap": (9, "/data/ckpt overlaps /data"),
    "storage_two_checkpoints": (9, "storage[1].checkpoint"),
    "storage_checkpoint_read_only": (8, "storage[0].read_only"),
    "storage_bucket_prefix_escapes": (8, "must not hold `.`, `..`"),
    "storage_on_ssh_provider": (10, "the ssh provider does not mount storage"),
    "storage_without_service_account": (9, "provider.service_account"),
    "gcp_public_nodes_without_ssh_ranges": (4, "provider.allowed_ssh_cidrs"),
    "autostop_action_unknown": (9, "autostop.action"),
    "autostop_idle_zero": (7, "autostop.idle_minutes"),
    "job_on_node_loss_unknown": (9, "job.on_node_loss"),
    "job_hang_timeout_zero": (9, "job.hang_timeout_minutes"),
    "misspelt_accelerator_type": (13, "nodes.accelerator.tpye"),
    "misspelt_job_framework": (8, "job.framwork"),
    "misspelt_job_command": (10, "job.comand"),
    "misspelt_files_exclude": (11, "files[1].exlude"),
    "misspelt_files_dst": (9, "files[0].dest"),
    # wrong types
    "count_string": (6, "nodes.count"),
    "count_fraction": (6, "nodes.count"),
    "count_bool": (6, "nodes.count: must be a whole number, not true or false"),
    "count_list": (6, "nodes.count"),
    "count_empty": (6, "nodes.count"),
    "nodes_empty": (5, "nodes: must be a mapping"),
    "provider_string": (3, "provider: must be a mapping"),
    "job_string": (7, "job: must be a mapping"),
    "files_string": (7, "files: Input should be a valid list"),
    "files_item_string": (8, "files[0]: must be a mapping"),
    "files_exclude_string": (10, "files[0].exclude"),
    "env_list": (8, "env: must be a mapping"),
    "env_value_mapping": (9, "env.NCCL"),
    "env_value_empty": (8, "env.WANDB_MODE"),
    "setup_list": (8, "setup"),
    "spot_word": (12, "nodes.spot"),
    "name_number": (2, "name"),
    "name_date": (2, "the date 2024-01-01"),
    # ranges and limits
    "count_huge": (6, "nodes.count"),
    "count_negative": (6, "nodes.count"),
    "count_zero": (6, "nodes.count"),
    "count_infinite": (6, "nodes.count"),
    "local_count_above_64": (6, "nodes.count: 65 is above the local provider's limit of 64"),
    "ssh_more_nodes_than_hosts": (9, "nodes.count: 3 is more than the 2 hosts"),
    "ssh_hosts_empty": (5, "provider.hosts"),
    "ssh_port_out_of_range": (6, "provider.hosts[0].port"),
    "disk_too_small": (12, "nodes.disk_gb"),
    "accelerator_count_zero": (12, "nodes.accelerator.count"),
    "max_restarts_negative": (11, "job.max_restarts"),
    "procs_per_node_zero": (11, "job.procs_per_node: must be 'auto' or a whole number"),
    "procs_per_node_word": (11, "job.procs_per_node: must be 'auto' or a whole number"),
    "nnodes_bad_format": (11, "job.nnodes"),
    "framework_unknown": (8, "job.framework"),
    # provider kind
    "provider_kind_unknown": (
        4,
        "provider.kind: must be one of local, gcp, aws, ssh (got 'azure')",
    ),
    "provider_kind_misspelt": (4, "provider.kind"),
    "provider_kind_missing": (4, "provider.kind"),
    "local_with_gcp_provisioning": (
        7,
        "nodes.provisioning: 'provisioning' is not a nodes key of kind local: only kinds gcp, "
        "aws take it",
    ),
    "local_with_gcp_machine_type": (7, "nodes.machine_type: 'machine_type' is not a nodes key"),
    "local_with_reservation": (7, "nodes.reservation: 'reservation' is not a nodes key of kind"),
    "local_with_gcp_project": (5, "provider.project: 'project' is not a provider key of kind"),
    "ssh_with_max_run_hours": (9, "nodes.max_run_hours: 'max_run_hours' is not a nodes key of"),
    "ssh_with_spot": (9, "nodes.spot: 'spot' is not a nodes key of kind ssh: only kinds gcp, aws"),
    "ssh_with_image": (9, "nodes.image: 'image' is not a nodes key of kind ssh"),
    "gcp_missing_project": (3, "provider.project: this required key is missing"),
    "gcp_zones_empty": (7, "provider.zones"),
    "gcp_compact_placement_n1": (9, "provider.compact_placement: compact placement is not"),
    "gcp_compact_placement_default_n1": (9, "provider.compact_placement: compact placement"),
    "gcp_n1_three_gpus": (14, "nodes.accelerator.count: an N1 VM takes 1, 2 or 4 x"),
    "gcp_n1_eight_t4": (11, "nodes.accelerator.count: an N1 VM takes 1, 2 or 4 x"),
    "gcp_flex_start_g4": (12, "nodes.provisioning: flex-start VMs are not offered for g4"),
    "gcp_a3_highgpu_2g_standard": (11, "nodes.machine_type: a3-highgpu-2g is offered only as"),
    "gcp_spot_with_reservation": (13, "nodes.reservation: Spot VMs cannot consume a reservation"),
    # names
    "name_uppercase": (2, "name: must start with a lowercase letter"),
    "name_leading_digit": (2, "name: must start with a lowercase letter"),
    "name_too_long": (2, "name: String should have at most 40 characters"),
    "name_underscore": (2, "name: must start with a lowercase letter"),
    "name_missing": (2, "name: this required key is missing"),
    # env names
    "env_name_dash": (9, "env.MY-VAR: is not a valid environment variable name"),
    "env_name_leading_digit": (8, "env.2FAST"),
    "env_name_dlvm_prefix": (9, "env.DLVM_NODE_RANK: names starting with DLVM_"),
    # job and files
    "job_missing_command": (7, "job.command: this required key is missing"),
    "files_src_missing": (9, "files[1].src: './no-such-dir' does not exist"),
    "files_src_empty": (8, "files[0].src"),
    "files_src_nul": (8, "files[0].src"),
    "files_src_too_long": (8, "files[0].src"),
    "files_src_unknown_user": (8, "files[0].src"),
    # written by the tests (see GENERATED)
    "not_utf8": (3, "not UTF-8 text (byte 0xff)"),
    "control_character": (2, "U+0007"),
    "nul_character": (1, "U+0000"),
    "too_large": (1, f"larger than {MAX_FILE_BYTES} bytes"),
}

GENERATED: dict[str, bytes] = {
    "not_utf8": b"name: demo\nprovider:\n  kind: l\xffcal\nnodes:\n  count: 3\n",
    "control_character": b"name: demo\nprovider: {kind: local}\x07\nnodes: {count: 3}\n",
    "nul_character": b"name: de\x00mo\nprovider: {kind: local}\nnodes: {count: 3}\n",
    "too_large": b"name: demo\n" + b"# padding\n" * (MAX_FILE_BYTES // 10 + 1),
}

# The CLI in a subprocess for a representative dozen: syntax, structure, every depth of key,
# types, ranges, semantic checks, files, bytes, and text that looks like terminal markup.
CLI_CASES = [
    "syntax_unclosed_flow_mapping",
    "tab_indentation",
    "empty",
    "billion_laughs",
    "top_level_list",
    "misspelt_nodes_count",
    "misspelt_files_exclude",
    "provider_kind_unknown",
    "name_uppercase",
    "env_name_dlvm_prefix",
    "local_count_above_64",
    "gcp_compact_placement_n1",
    "gcp_flex_start_g4",
    "local_with_gcp_provisioning",
    "ssh_with_max_run_hours",
    "files_src_missing",
    "markup_in_key",
    "emoji_code_in_key",
    "not_utf8",
]

# The good files the corpus is made from: each corpus file differs from one in one way.
GOOD = {
    "local": "name: demo\nprovider:\n  kind: local\nnodes:\n  count: 3\n",
    "ssh": (
        "name: demo\nprovider:\n  kind: ssh\n  hosts:\n    - {host: 10.0.0.1, user: ubuntu}\n"
        "    - {host: 10.0.0.2, user: ubuntu}\nnodes:\n  count: 2\n"
    ),
    "gcp": (
        "name: demo\nprovider:\n  kind: gcp\n  project: my-project\n  region: us-central1\n"
        "  zones: [us-central1-a]\n  allowed_ssh_cidrs: [203.0.113.0/24]\nnodes:\n  count: 2\n"
        "  machine_type: g2-standard-8\n  accelerator: {type: nvidia-l4, count: 1}\n"
        "  disk_gb: 100\n  spot: true\n"
    ),
    "job": (
        "name: demo\nprovider:\n  kind: local\nnodes:\n  count: 3\nenv:\n  OMP_NUM_THREADS: 4\n"
        "files:\n  - {src: ., dst: ~/work, exclude: ['*.pyc']}\nsetup: echo hi\njob:\n"
        "  framework: torchrun\n  workdir: ~/work\n  command: train.py\n  procs_per_node: 2\n"
        "  nnodes: '1:4'\n  max_restarts: 0\n  on_node_loss: fail\n  max_restarts_on_error: 1\n"
        "  hang_timeout_minutes: null\n  check: true\n"
    ),
    "storage": (
        "name: demo\nprovider:\n  kind: local\nnodes:\n  count: 2\nstorage:\n"
        "  - {mount: /data, bucket: gs://my-bucket, read_only: true, cache: false}\n"
        "  - {mount: /ckpt, bucket: gs://my-bucket/run1, checkpoint: true}\n"
        "autostop: {idle_minutes: 45, action: down, max_hours: 72}\n"
    ),
}


def case_path(name: str, directory: Path) -> Path:
    if name in GENERATED:
        path = directory / f"{name}.yaml"
        path.write_bytes(GENERATED[name])
        return path
    return CORPUS / f"{name}.yaml"


def run_up(path: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DLVM_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "dlvm_cluster", "up", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def test_table_covers_the_whole_corpus() -> None:
    on_disk = {path.stem for path in CORPUS.glob("*.yaml")}
    assert on_disk == set(EXPECTED) - set(GENERATED)
    assert len(EXPECTED) >= 60
    assert set(CLI_CASES) <= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_the_good_twins_load(name: str) -> None:
    loaded = load_spec_text(GOOD[name], CORPUS / f"{name}.yaml")
    assert loaded.spec.name == "demo"


def test_the_checkpoint_mount_is_the_marked_one_else_the_first_writable_one() -> None:
    marked = load_spec_text(GOOD["storage"], CORPUS / "storage.yaml").spec
    assert marked.checkpoint_storage is not None
    assert marked.checkpoint_storage.mount == "/ckpt"
    # The read-only /data comes first: checkpoints cannot be written there.
    unmarked = load_spec_text(
        GOOD["storage"].replace(", checkpoint: true", ""), CORPUS / "storage.yaml"
    ).spec
    assert unmarked.checkpoint_storage is not None
    assert unmarked.checkpoint_storage.mount == "/ckpt"
    read_only = load_spec_text(
        GOOD["storage"].replace(", checkpoint: true", ", read_only: true"), CORPUS / "s.yaml"
    ).spec
    assert read_only.checkpoint_storage is None
    assert load_spec_text(GOOD["local"], CORPUS / "local.yaml").spec.checkpoint_storage is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_names_line_and_field(name: str, tmp_path: Path) -> None:
    path = case_path(name, tmp_path)
    line, fragment = EXPECTED[name]
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    error = caught.value
    assert error.exit_code == 2
    assert error.location is not None, str(error)
    assert (error.location.file, error.location.line) == (str(path), line), str(error)
    assert error.location.column >= 1
    assert str(error).startswith(f"{path}:{line}:")
    assert fragment in str(error)
    # One line per problem of the file (most files here have one).
    assert str(error).count("\n") == len(error.problems) - 1
    assert all("\n" not in str(problem) for problem in error.problems)
    if error.field:
        assert f": {error.field}: " in str(error)


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_refuses_bad_file(name: str, tmp_path: Path) -> None:
    path = case_path(name, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    line, fragment = EXPECTED[name]
    result = run_up(path, home)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"{path}:{line}:" in result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in output
    assert list(home.rglob("*")) == [], "a refused file must create no state"


@pytest.mark.parametrize("name", ["misspelt_nodes_count", "markup_in_key", "files_src_missing"])
def test_cli_prints_the_loaders_message_verbatim(name: str, tmp_path: Path) -> None:
    path = case_path(name, tmp_path)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    error = caught.value
    result = run_up(path, tmp_path / "home")
    expected = f"error: {error}\n" + (f"hint: {error.hint}\n" if error.hint else "")
    assert result.stderr == expected


def test_cli_missing_file_is_usage_error(tmp_path: Path) -> None:
    result = run_up(tmp_path / "nowhere.yaml", tmp_path / "home")
    assert result.returncode == 2
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "home").exists()


BASE = "name: demo\nprovider:\n  kind: local\nnodes:\n  count: 3\n"


@pytest.mark.parametrize(
    ("text", "field", "guess"),
    [
        (BASE.replace("count:", "cuont:"), "nodes.cuont", "count"),
        (BASE.replace("provider:", "provder:"), "provder", "provider"),
        (BASE + "job:\n  framwork: torchrun\n  command: x\n", "job.framwork", "framework"),
        (BASE + "job:\n  command: x\n  procs_per_nod: 2\n", "job.procs_per_nod", "procs_per_node"),
        (BASE + "files:\n  - {src: ., dst: ~/w, exlcude: [a]}\n", "files[0].exlcude", "exclude"),
        (BASE.replace("kind: local", "kind: local\n  kidn: local"), "provider.kidn", "kind"),
        (BASE.replace("name:", "nme:"), "nme", "name"),
    ],
)
def test_did_you_mean_for_misspelt_keys(text: str, field: str, guess: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, Path("c.yaml"))
    error = caught.value
    assert error.field == field
    assert f"did you mean {guess!r}?" in str(error)
    assert error.hint == f"did you mean {guess!r}?"


@pytest.mark.parametrize(
    ("old", "new", "guess"),
    [
        ("kind: local", "kind: lcoal", "local"),
        ("kind: local", "kind: sssh", "ssh"),
        ("count: 3", "count: 3\njob:\n  framework: torchrn\n  command: x", "torchrun"),
        ("count: 3", "count: 3\njob:\n  framework: deepspeeed\n  command: x", "deepspeed"),
    ],
)
def test_did_you_mean_for_misspelt_values(old: str, new: str, guess: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE.replace(old, new), Path("c.yaml"))
    assert caught.value.hint == f"did you mean {guess!r}?"


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE + "  zzzzzz: 1\n", Path("c.yaml"))
    assert caught.value.hint == "known keys here: count, accelerator"


def test_misspelling_is_reported_without_the_missing_key_it_causes() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE.replace("count:", "cuont:"), Path("c.yaml"))
    assert "unknown key 'cuont'" in str(caught.value)
    assert "missing" not in str(caught.value)
    assert len(caught.value.problems) == 1


def test_every_problem_of_a_file_is_listed_at_once_in_file_order() -> None:
    text = (
        "name: Bad_Name\nprovider:\n  kind: local\nnodes:\n  count: two\n"
        "job:\n  framwork: torchrun\n  command: x\n  procs_per_nod: 2\n  nnodes: '3:1'\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, Path("c.yaml"))
    problems = caught.value.problems
    assert [(p.location.line if p.location else 0, p.field) for p in problems] == [
        (1, "name"),
        (5, "nodes.count"),
        (7, "job.framwork"),
        (9, "job.procs_per_nod"),
        (10, "job.nnodes"),
    ]
    shown = str(caught.value).splitlines()
    assert shown[0].startswith("c.yaml:1:7: name: ") and "(5 problems in all:)" in shown[0]
    assert shown[1:] == [f"  {problem}" for problem in problems[1:]]
    assert "MIN 3 is more than MAX 1" in shown[-1]


@pytest.mark.parametrize(
    ("job", "nodes", "message"),
    [
        ("  framework: torchrun\n  nnodes: '3:1'\n", 3, "MIN 3 is more than MAX 1"),
        ("  framework: torchrun\n  nnodes: '0:2'\n", 3, "at least 1 node"),
        ("  framework: torchrun\n  nnodes: '0'\n", 3, "at least 1 node"),
        ("  framework: torchrun\n  nnodes: '4'\n", 3, "4 nodes, but nodes.count is 3"),
        ("  framework: torchrun\n  nnodes: '1:2'\n", 3, "at most 2 nodes, but nodes.count is 3"),
        ("  framework: horovod\n  nnodes: '4:6'\n", 3, "at least 4 nodes"),
        ("  framework: mpi\n  nnodes: '1:3'\n", 3, "for torchrun and horovod only"),
        ("  framework: deepspeed\n  nnodes: '2:3'\n", 3, "for torchrun and horovod only"),
    ],
)
def test_job_fields_that_cannot_work_together_are_refused_at_their_line(
    job: str, nodes: int, message: str
) -> None:
    text = BASE.replace("count: 3", f"count: {nodes}") + "job:\n  command: x\n" + job
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, Path("c.yaml"))
    assert caught.value.field == "job.nnodes"
    assert caught.value.location is not None and caught.value.location.line == 9
    assert message in str(caught.value)


def test_job_rules_run_even_when_another_section_is_invalid() -> None:
    text = BASE.replace("kind: local", "kind: lcal") + "job:\n  command: x\n  nnodes: '5'\n"
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, Path("c.yaml"))
    assert [p.field for p in caught.value.problems] == ["provider.kind", "job.nnodes"]


def test_a_valid_elastic_job_loads() -> None:
    text = BASE + "job:\n  framework: torchrun\n  command: x\n  nnodes: '1:3'\n"
    assert load_spec_text(text, Path("c.yaml")).spec.job is not None


def test_env_scalars_become_text_and_bools_are_not_numbers() -> None:
    loaded = load_spec_text(
        BASE + "env:\n  OMP_NUM_THREADS: 4\n  DEBUG: true\n  RATIO: 0.5\n", Path("c.yaml")
    )
    assert loaded.spec.env == {"OMP_NUM_THREADS": "4", "DEBUG": "true", "RATIO": "0.5"}
    with pytest.raises(SpecError, match=r"nodes\.count: must be a whole number"):
        load_spec_text(BASE.replace("count: 3", "count: false"), Path("c.yaml"))
    with pytest.raises(SpecError, match=r"job\.procs_per_node"):
        load_spec_text(BASE + "job:\n  command: x\n  procs_per_node: true\n", Path("c.yaml"))


def test_core_tags_are_still_accepted() -> None:
    loaded = load_spec_text(
        BASE.replace("name: demo", "name: !!str demo") + "env: !!map {A: !!str 0123}\n",
        Path("c.yaml"),
    )
    assert loaded.spec.env == {"A": "0123"}


def test_a_key_with_a_newline_keeps_the_message_on_one_line() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE + '"a\\nb": 1\n', Path("c.yaml"))
    assert "\n" not in str(caught.value)
    assert caught.value.field == "['a\\nb']"


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_load(path: Path) -> None:
    loaded = load_spec(path)
    assert loaded.spec.nodes.count >= 1


@pytest.mark.parametrize(
    "nodes",
    [
        "machine_type: n1-standard-32\n  accelerator: {type: nvidia-tesla-v100, count: 8}",
        "accelerator: {type: nvidia-tesla-p100, count: 4}",
        "machine_type: n1-standard-8",  # N1 without GPUs
    ],
)
def test_n1_shapes_google_takes_load(nodes: str) -> None:
    text = GOOD["gcp"].split("nodes:")[0] + f"nodes:\n  count: 2\n  {nodes}\n"
    assert load_spec_text(text, CORPUS / "n1.yaml").spec.nodes.count == 2


def test_compact_placement_loads_on_families_that_have_it() -> None:
    text = GOOD["gcp"].replace(
        "  allowed_ssh_cidrs", "  compact_placement: true\n  allowed_ssh_cidrs"
    )
    assert load_spec_text(text, CORPUS / "compact.yaml").spec.provider.kind == "gcp"
