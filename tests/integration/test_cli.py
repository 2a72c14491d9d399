"""The `pdl` command line on a real SQLite data directory: demo, policy show, history, token,
errors."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from ledger.clock import FixedClock
from server.auth import PrincipalRegistry
from server.cli import app
from server.demo import DEMO_START, DemoValues, run_demo
from server.runtime import open_runtime
from server.settings import Scope, load_settings

PDL = Path(sys.executable).with_name("pdl")
SCRIPT = [
    ("accepted", "register an adult", "SubjectRegistered"),
    ("refused", "minor (born 2011, aged 15) without a guardian", "MINOR_WITHOUT_GUARDIAN (§5)"),
    ("accepted", "register the minor with their guardian's account", "SubjectRegistered"),
    ("accepted", "collect the adult's usage log by default", "DataCollected"),
    ("accepted", "collect the adult's IP address by default", "DataCollected"),
    ("refused", "GPS fix (app, for customer_service) before any consent",
     "SENSITIVE_CATEGORY_WITHOUT_CONSENT (§1(5))"),
    ("accepted", "the adult allows location for customer_service", "ConsentGiven"),
    ("accepted", "GPS fix (app, for customer_service) after consent", "DataCollected"),
    ("refused", "minor consents to product_analysis by themselves",
     "MINOR_CONSENT_REQUIRES_GUARDIAN (§5)"),
    ("accepted", "the guardian consents to product_analysis for the minor", "ConsentGiven"),
    ("accepted", "collect the minor's usage log", "DataCollected"),
    ("accepted", "the adult consents to advertising", "ConsentGiven"),
    ("refused", "share the adult's GPS fix with Example Ads Ltd",
     "CATEGORY_NOT_NEEDED_FOR_PURPOSE (§4.2)"),
    ("accepted", "share the adult's usage log with Example Ads Ltd", "DataShared"),
    ("refused", "sell the adult's usage log", "SALE_PROHIBITED (§4)"),
    ("accepted", "the adult withdraws consent to product_analysis", "ConsentWithdrawn"),
    ("refused", "use the adult's usage log for product_analysis", "CONSENT_WITHDRAWN"),
    ("accepted", "use the adult's IP address for security_detection", "DataUsed"),
    ("accepted", "the guardian asks to delete the minor's data", "RightsRequestOpened"),
    ("accepted", "close the deletion request as fulfilled", "RightsRequestClosed"),
    ("refused", "use the minor's usage log after the erasure", "SUBJECT_ERASED (§6.3)"),
]  # fmt: skip
_SUMMARY = re.compile(
    r"demo: 14 accepted, 7 refused \(all as scripted\); adult (?P<adult>[0-9a-f-]{36}), "
    r"minor (?P<minor>[0-9a-f-]{36}) \(erased\); data dir (?P<dir>.+); (?P<events>\d+) events"
)
# Shapes of the values `DemoValues.generate` makes, to catch any of them in the CLI's output.
_VALUE_SHAPES = re.compile(
    r"demo-(adult|minor|guardian)-|session=|\b10\.\d+\.\d+\.\d+\b|\d+\.\d{6},\d+\.\d{6}"
)


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, and colour only when asked (it never is here); the
    scripts the tests start inherit this environment."""
    for name in list(os.environ):
        if name.startswith("PDL_") or name in {"FORCE_COLOR", "TTY_COMPATIBLE"}:
            monkeypatch.delenv(name)


def pdl(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def run_demo_cli(data_dir: Path) -> tuple[Result, re.Match[str]]:
    result = pdl("demo", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    summary = _SUMMARY.search(result.stdout)
    assert summary is not None, result.stdout
    return result, summary


def made_ledger(data_dir: Path) -> Path:
    """A new ledger in `data_dir`, as `pdl serve` makes one on its first start."""
    open_runtime(load_settings(environ={}, data_dir=data_dir)).close()
    return data_dir


def assert_one_error_line(result: Result, exit_code: int = 1) -> str:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_demo_prints_each_scripted_step_as_accepted_or_refused_with_its_reason(
    tmp_path: Path,
) -> None:
    result, summary = run_demo_cli(tmp_path / "data")

    steps = [line for line in result.stdout.splitlines() if line.startswith(("✓", "✗"))]
    assert len(steps) == len(SCRIPT)
    for line, (outcome, step, shown) in zip(steps, SCRIPT, strict=True):
        if outcome == "accepted":
            assert line.startswith("✓ accepted  "), line
            assert re.search(rf"  \({shown} @ position \d+\)$", line), line
        else:
            assert line.startswith("✗ refused   "), line
            assert f"  {shown}" in line, line
        assert step in line
    assert result.stderr == ""
    assert "\x1b[" not in result.stdout  # no colour codes when the output is not a terminal
    assert Path(summary["dir"]) == (tmp_path / "data").resolve()


def test_demo_shows_the_due_date_the_erasure_and_the_adults_current_state(
    tmp_path: Path,
) -> None:
    result, summary = run_demo_cli(tmp_path / "data")
    out = result.stdout

    assert "due 2026-03-19 11:00+08:00 (15 calendar days from receipt, §6.4)" in out
    assert (
        "erased=True, account cancelled=True, data key shredded=True, sealed values unreadable"
        in out
    )
    assert f"Current state of subject {summary['adult']}:" in out
    held = re.findall(r"^  (?:held        |            ) (\S+) +from", out, re.MULTILINE)
    assert held == ["location.gps", "network_log.ip_address", "network_log.usage"]
    assert "in force  customer_service: location.gps" in out
    assert "withdrawn    product_analysis (every category)" in out
    assert "shared with  Example Ads Ltd (third_party_partners)" in out
    assert "flags        minor=no, guardian=no, erased=no" in out


def test_demo_runs_again_on_the_same_data_dir_with_new_people(tmp_path: Path) -> None:
    _, first = run_demo_cli(tmp_path / "data")
    _, second = run_demo_cli(tmp_path / "data")

    assert {first["adult"], first["minor"]}.isdisjoint({second["adult"], second["minor"]})
    assert int(second["events"]) > int(first["events"])


def test_the_installed_pdl_script_runs_the_demo(tmp_path: Path) -> None:
    assert PDL.exists(), f"{PDL} is missing: run .venv/bin/pip install -e ."
    done = subprocess.run(  # noqa: S603 (our own entry point, with fixed arguments)
        [str(PDL), "demo", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert _SUMMARY.search(done.stdout) is not None, done.stdout
    assert "✗ refused   sell the adult's usage log" in done.stdout


def test_demo_output_and_histories_show_none_of_the_recorded_personal_values(
    tmp_path: Path,
) -> None:
    values = DemoValues.generate()
    data_dir = tmp_path / "data"
    clock = FixedClock(DEMO_START)
    runtime = open_runtime(load_settings(data_dir=data_dir), clock=clock)
    shown = io.StringIO()
    try:
        summary = run_demo(runtime.ledger, clock, Console(file=shown, width=200), values)
    finally:
        runtime.close()
    outputs = [
        shown.getvalue(),
        pdl("history", summary.adult, "--data-dir", data_dir).stdout,
        pdl("history", summary.minor, "--data-dir", data_dir).stdout,
        pdl("demo", "--data-dir", data_dir).output,
    ]

    assert summary.unexpected == 0
    assert "<sealed>" in outputs[1]
    for output in outputs:
        for value in values.all():
            assert value not in output
        assert _VALUE_SHAPES.search(output) is None
    stored = b"".join(p.read_bytes() for p in data_dir.iterdir())
    assert not [v for v in values.all() if v.encode() in stored]


def test_history_of_the_erased_minor_keeps_its_audit_trail_with_values_sealed(
    tmp_path: Path,
) -> None:
    _, summary = run_demo_cli(tmp_path / "data")

    result = pdl("history", summary["minor"], "--data-dir", tmp_path / "data")

    assert result.exit_code == 0, result.output
    types = re.findall(r"^\s+\d+\s+\S+\s+(\w+)", result.stdout, re.MULTILINE)
    assert types == [
        "SubjectRegistered",
        "ConsentGiven",
        "DataCollected",
        "AccountCancelled",  # asked on the account-cancelled ground (§6.3(5))
        "DataErased",
        "KeyShredded",
    ]
    assert "account_id: <erased>" in result.stdout  # the key is shredded: gone for good
    assert "guardian: <erased>" in result.stdout
    assert "values: page=<erased>" in result.stdout
    assert "<sealed>" not in result.stdout
    assert "ground=account_cancelled" in result.stdout


def test_history_of_an_unknown_subject_is_a_one_line_error(tmp_path: Path) -> None:
    unknown = uuid4()
    made_ledger(tmp_path / "data")

    line = assert_one_error_line(pdl("history", unknown, "--data-dir", tmp_path / "data"))

    assert line == f"error: unknown subject {unknown}"


def test_history_of_something_that_is_not_a_pseudonym_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    typed = "alice@example.com"  # what a user might type instead of the person's pseudonym
    line = assert_one_error_line(
        pdl("history", typed, "--data-dir", tmp_path / "data"), exit_code=2
    )

    assert "not a subject id" in line
    assert "alice" not in line  # never echoed: it may be a personal value


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("data_dir = [", "is not valid TOML"),
        ("no_such_setting = 1", "invalid settings: no_such_setting"),
        ("master_key = 'not base64 at all!'", "error: "),
        (None, "cannot read"),
    ],
    ids=["bad-toml", "unknown-setting", "bad-master-key", "missing-file"],
)
def test_a_bad_config_file_is_one_error_line_without_a_traceback(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    config = tmp_path / "pdl.toml"
    if content is not None:
        config.write_text(f"data_dir = '{tmp_path / 'data'}'\n{content}\n")

    line = assert_one_error_line(pdl("demo", "--config", config))

    assert expected in line


def test_policy_show_prints_the_version_in_force_and_its_digest(tmp_path: Path) -> None:
    made_ledger(tmp_path / "data")
    result = pdl(
        "policy", "show", "--data-dir", tmp_path / "data", "--at", "2026-03-02T09:00+08:00"
    )

    assert result.exit_code == 0, result.output
    assert re.search(r"^policy\s+sossen-privacy-policy version 1$", result.stdout, re.MULTILINE)
    assert re.search(r"^digest\s+sha256:[0-9a-f]{64}$", result.stdout, re.MULTILINE)
    assert re.search(r"^categories\s+17 \(8 sensitive\)$", result.stdout, re.MULTILINE)
    assert re.search(r"^deadline\s+15 calendar days \(§6\.4\)$", result.stdout, re.MULTILINE)


@pytest.mark.parametrize(
    ("at", "expected", "exit_code"),
    [
        ("2020-01-01T00:00Z", "NO_POLICY_IN_FORCE", 1),
        ("2026-03-02T09:00", "no UTC offset", 2),
        ("yesterday", "not an ISO-8601 instant", 2),
    ],
)
def test_policy_show_at_a_bad_instant_is_a_one_line_error(
    tmp_path: Path, at: str, expected: str, exit_code: int
) -> None:
    made_ledger(tmp_path / "d")
    shown = pdl("policy", "show", "--data-dir", tmp_path / "d", "--at", at)

    line = assert_one_error_line(shown, exit_code=exit_code)

    assert expected in line


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["demo", "--help"],
        ["policy", "--help"],
        ["policy", "show", "--help"],
        ["history", "--help"],
        ["serve", "--help"],
        ["project", "--help"],
    ],
    ids=" ".join,
)
def test_every_command_has_help(args: list[str]) -> None:
    result = pdl(*args)

    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


@pytest.mark.parametrize("args", [[], ["policy"]], ids=["pdl", "pdl policy"])
def test_a_group_without_its_command_prints_its_help_with_clicks_usage_exit_code(
    args: list[str],
) -> None:
    result = pdl(*args)

    assert result.exit_code == 2, result.output
    assert f"Usage: pdl {' '.join(args)}".rstrip() in " ".join(result.stdout.split())
    assert result.stderr == ""


def test_the_help_of_pdl_says_what_its_exit_codes_mean() -> None:
    result = pdl()

    assert "Exit codes: 0 done, 1 the command failed, 2 a usage error." in result.stdout


_BOX_DRAWING = re.compile("[\u2500-\u257f]")
_USAGE_ERRORS = {
    "missing argument": (
        ["history", "--data-dir", "data"],
        "error: missing argument 'SUBJECT_ID' (see 'pdl history --help')",
    ),
    "unknown option": (
        ["serve", "--nope", "--data-dir", "data"],
        "error: no such option: --nope (see 'pdl serve --help')",
    ),
    "value out of range": (
        ["project", "--once", "--workers", "0", "--data-dir", "data"],
        "error: invalid value for '--workers': ",
    ),
    "value not an integer": (
        ["project", "--once", "--workers", "x", "--data-dir", "data"],
        "error: invalid value for '--workers': ",
    ),
    "option without its value": (
        ["history", "--data-dir"],
        "error: option '--data-dir' requires an argument (see 'pdl history --help')",
    ),
    "unknown command": (["nope"], "error: no such command (see 'pdl --help')"),
    "mistyped command": (["sevre"], "error: no such command; did you mean 'serve'? (see 'pdl"),
    "unknown option of policy show": (
        ["policy", "show", "--nope", "--data-dir", "data"],
        "error: no such option: --nope (see 'pdl policy show --help')",
    ),
    "unknown policy command": (
        ["policy", "nope"],
        "error: no such command (see 'pdl policy --help')",
    ),
    "port out of range": (
        ["serve", "--listen", "127.0.0.1:99999", "--data-dir", "data"],
        "error: --listen: expected HOST:PORT with a port from 0 to 65535",
    ),
    "address without a port": (
        ["serve", "--listen", "127.0.0.1", "--data-dir", "data"],
        "error: --listen: expected HOST:PORT",
    ),
    "unknown view": (
        ["project", "--once", "--view", "nosuch", "--data-dir", "data"],
        "error: --view: unknown view nosuch; known: ",
    ),
    "instant without an offset": (
        ["policy", "show", "--at", "2026-03-02", "--data-dir", "data"],
        "error: --at: '2026-03-02' has no UTC offset",
    ),
}


@pytest.mark.parametrize(("args", "expected"), _USAGE_ERRORS.values(), ids=_USAGE_ERRORS.keys())
def test_a_usage_error_is_one_error_line_with_exit_code_2_and_touches_no_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    monkeypatch.chdir(tmp_path)  # the default data directory, ./pdl-data, would be made here

    result = pdl(*args)

    line = assert_one_error_line(result, exit_code=2)
    assert line.startswith(expected)
    assert _BOX_DRAWING.search(result.output) is None
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["history", "00000000-0000-0000-0000-000000000000"],
        ["policy", "show"],
        ["project", "--once"],
    ],
    ids=["history", "policy-show", "project"],
)
def test_a_reading_command_on_a_missing_data_directory_makes_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    mistyped = tmp_path / "pdl-dta"

    line = assert_one_error_line(pdl(*args, "--data-dir", mistyped))

    assert line.startswith(f"error: no data directory {mistyped}: give --data-dir")
    assert not mistyped.exists()


def test_a_bad_setting_names_where_it_was_set(tmp_path: Path) -> None:
    config = tmp_path / "pdl.toml"
    config.write_text(f"data_dir = '{tmp_path / 'data'}'\nmax_batch_items = 0\n")

    from_file = assert_one_error_line(pdl("demo", "--config", config))

    assert from_file.startswith(f"error: invalid settings: max_batch_items (from {config}): ")


def test_a_usage_error_does_not_echo_the_extra_arguments_it_got(tmp_path: Path) -> None:
    result = pdl("history", "alice@example.com", "Alice Smith", "--data-dir", tmp_path / "data")

    line = assert_one_error_line(result, exit_code=2)
    assert line == "error: got unexpected extra argument(s) (see 'pdl history --help')"
    assert not tmp_path.joinpath("data").exists()


def test_a_usage_error_does_not_echo_a_word_taken_for_a_command(tmp_path: Path) -> None:
    result = pdl("alice@example.com", "--data-dir", tmp_path / "data")

    line = assert_one_error_line(result, exit_code=2)
    assert line == "error: no such command (see 'pdl --help')"
    assert not tmp_path.joinpath("data").exists()


@pytest.mark.parametrize(
    "name", ["missing argument", "unknown option of policy show", "value not an integer"]
)
def test_the_installed_pdl_script_reports_a_usage_error_in_one_line(
    tmp_path: Path, name: str
) -> None:
    args, expected = _USAGE_ERRORS[name]
    done = subprocess.run(  # noqa: S603 (our own entry point, with fixed arguments)
        [str(PDL), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(expected)
    assert _BOX_DRAWING.search(done.stderr) is None
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_the_script_is_still_importing_exits_130_without_a_traceback(
    tmp_path: Path,
) -> None:
    # Importing the command line takes about a second here; 0.3 s falls inside it.
    started = subprocess.Popen(  # noqa: S603 (our own entry point, with fixed arguments)
        [str(PDL), "policy", "show", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    started.send_signal(signal.SIGINT)
    stdout, stderr = started.communicate(timeout=60)

    assert started.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stdout == ""


def test_subject_ids_in_the_summary_are_pseudonyms(tmp_path: Path) -> None:
    _, summary = run_demo_cli(tmp_path / "data")

    assert UUID(summary["adult"]).version == 4
    assert UUID(summary["minor"]).version == 4


def test_history_of_a_rights_request_id_is_not_a_subjects_history(tmp_path: Path) -> None:
    result, _ = run_demo_cli(tmp_path / "data")
    found = re.search(r"request ([0-9a-f-]{36}): due", result.stdout)
    assert found is not None, result.stdout

    line = assert_one_error_line(pdl("history", found[1], "--data-dir", tmp_path / "data"))

    assert line == f"error: unknown subject {found[1]}"


@pytest.mark.parametrize(
    ("option", "lower"), [((), 10), (("--nice", "0"), 0), (("--nice", "5"), 5)]
)
def test_project_workers_run_at_the_priority_asked_or_the_settings_default(
    tmp_path: Path, option: tuple[str, ...], lower: int
) -> None:
    """`pdl project` workers are deferred work too: by default `projection_nice` (10) lower in
    CPU priority than the command, or as `--nice` says; they stop on SIGTERM."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    made_ledger(tmp_path / "data")
    command = [str(PDL), "project", "--data-dir", str(tmp_path / "data"), "--workers", "2"]
    project = subprocess.Popen(  # noqa: S603 (our own entry point, with fixed arguments)
        [*command, *option],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PDL_PROJECTIONS": "external"},
        text=True,
    )
    try:
        assert project.stderr is not None
        workers = []
        for line in project.stderr:
            started = re.match(r"pdl: worker (\d+) runs ", line)
            if started:
                workers.append(int(started.group(1)))
            if len(workers) == 2:
                break
        assert len(workers) == 2, "the workers did not start"
        expected = [min(mine + lower, 19)] * 2
        deadline = time.monotonic() + 30  # a worker lowers its priority once it runs
        while (
            seen := [os.getpriority(os.PRIO_PROCESS, pid) for pid in workers]
        ) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == expected
        assert os.getpriority(os.PRIO_PROCESS, project.pid) == mine  # only the workers
    finally:
        project.terminate()
        _, rest = project.communicate(timeout=30)
    assert project.returncode == 0, rest


def test_project_refuses_a_nice_outside_0_to_19_as_a_usage_error(tmp_path: Path) -> None:
    for value in ("-1", "20", "ten"):
        result = pdl("project", "--nice", value, "--data-dir", tmp_path / "data")
        line = assert_one_error_line(result, exit_code=2)
        assert "--nice" in line
    assert not (tmp_path / "data").exists()


# --- pdl token ------------------------------------------------------------------------------


def test_a_token_made_by_pdl_token_authenticates_its_principal_with_its_scopes(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "analytics.token"

    result = pdl(
        "token", "analytics", "--scope", "read", "--scope", "audit", "--token-file", token_file
    )

    assert result.exit_code == 0, result.output
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert token not in result.output  # only its hash is printed
    assert str(token_file) in result.stderr
    config = tmp_path / "pdl.toml"
    config.write_text(result.stdout)
    settings = load_settings(config, environ={}, data_dir=tmp_path / "data")
    principal = PrincipalRegistry.from_settings(settings, None).by_token(token)
    assert principal is not None
    assert (principal.name, principal.scopes) == ("analytics", {Scope.READ, Scope.AUDIT})


def test_pdl_token_never_overwrites_a_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "analytics.token"
    token_file.write_text("the service's current token\n")

    result = pdl("token", "analytics", "--scope", "read", "--token-file", token_file)

    line = assert_one_error_line(result)
    assert line == f"error: {token_file} exists: a token file is never overwritten"
    assert token_file.read_text() == "the service's current token\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["bad name!", "--scope", "read"], 2),  # not a principal name
        (["analytics"], 2),  # no scope
        (["analytics", "--scope", "everything"], 2),  # no such scope
        (["admin", "--scope", "read"], 2),  # the server's own principal
    ],
    ids=["name", "no-scope", "unknown-scope", "admin"],
)
def test_pdl_token_refuses_bad_input_in_one_line_and_makes_no_file(
    tmp_path: Path, args: list[str], exit_code: int
) -> None:
    token_file = tmp_path / "analytics.token"

    result = pdl("token", *args, "--token-file", token_file)

    assert_one_error_line(result, exit_code=exit_code)
    assert not token_file.exists()
    assert result.stdout == ""


def test_pdl_version_prints_the_installed_version_and_exits_0() -> None:
    result = pdl("--version")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"pdl {metadata.version('personal-data-ledger')}\n"


def test_catching_up_off_a_terminal_prints_only_its_result(tmp_path: Path) -> None:
    assert pdl("demo", "--data-dir", tmp_path / "data").exit_code == 0

    result = pdl("project", "--once", "--data-dir", tmp_path / "data")

    assert result.exit_code == 0, result.output
    [line] = result.stderr.splitlines()  # no empty line a progress bar left behind
    assert re.fullmatch(r"pdl: views subjects, .*, notices at position \d+", line)


# --- read-only commands, the demo's own directory, a failed start ------------------------------


@pytest.mark.parametrize("command", [("policy", "show"), ("history", str(uuid4()))])
def test_a_reading_command_makes_no_ledger_in_an_empty_directory(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    line = assert_one_error_line(pdl(*command, "--data-dir", empty))

    assert "no ledger in" in line
    assert list(empty.iterdir()) == [], "a reading command made files"


def test_a_reading_command_makes_no_master_key(tmp_path: Path) -> None:
    data = made_ledger(tmp_path / "data")
    (data / "master.key").rename(tmp_path / "kept.key")

    line = assert_one_error_line(pdl("policy", "show", "--data-dir", data))

    assert "no master key" in line
    assert not (data / "master.key").exists()


def test_the_demo_refuses_a_ledger_it_did_not_make_and_runs_again_on_its_own(
    tmp_path: Path,
) -> None:
    served = made_ledger(tmp_path / "served")
    before = sorted(p.name for p in served.iterdir())

    line = assert_one_error_line(pdl("demo", "--data-dir", served))

    assert "did not make" in line
    assert sorted(p.name for p in served.iterdir()) == before
    run_demo_cli(tmp_path / "demo")
    run_demo_cli(tmp_path / "demo")  # again on its own directory


def test_the_demo_records_in_its_own_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    result = pdl("demo")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "pdl-demo" / "events.db").is_file()
    assert not (tmp_path / "pdl-data").exists()


def test_a_failed_start_of_serve_makes_no_admin_token(tmp_path: Path) -> None:
    data = made_ledger(tmp_path / "data")
    (data / "master.key").write_text("not a key\n", encoding="utf-8")
    (data / "master.key").chmod(0o600)

    assert_one_error_line(pdl("serve", "--data-dir", data, "--listen", "127.0.0.1:0"))

    assert not (data / "admin.token").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:99999/test", "not a valid URL"),
        ("postgresql://postgres@127.0.0.1:5432/test?sslmode=require", "PGSSLMODE"),
    ],
)
def test_a_database_url_the_server_cannot_honour_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    monkeypatch.setenv("PDL_DATABASE_URL", url)

    line = assert_one_error_line(
        pdl("serve", "--data-dir", tmp_path / "d", "--listen", "127.0.0.1:0")
    )  # a port of its own: the default may be taken on this machine

    assert expected in line
    assert not (tmp_path / "d" / "admin.token").exists()
