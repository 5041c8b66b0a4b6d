"""The README runs as written: every ```python block is executed, and every `cbundles ...`
command (```bash blocks and inline code in the commands table) is parsed by the real CLI
(unknown options or bad values fail) and then run, at tiny scale where the command allows it
(synthetic data, one epoch; see TINY) and with --help otherwise.

Robust to README edits: whatever snippets and commands the README holds are checked."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Options set on every tiny run of a sub-command (only those the sub-command has); "{out}" is a
# fresh folder. The last occurrence of an option wins, so these override the README's values.
_SMALL = {"--dataset": "synthetic", "--train-limit": "128", "--test-limit": "64"}
TINY: dict[str, dict[str, str]] = {
    "train": {**_SMALL, "--epochs": "1", "--samples": "16", "--out": "{out}"},
    "autotune": {
        **_SMALL,
        "--epochs": "1",
        "--check-epochs": "1",
        "--samples": "16",
        "--out": "{out}",
    },  # fmt: skip
    "grid": {
        **_SMALL,
        "--epochs": "1",
        "--samples": "16",
        "--workers": "1",
        "--widths": "3,5",
        "--depths": "1,2",
        "--out": "{out}",
    },  # fmt: skip
    "lesion": {
        "--repeats": "2",
        "--max-k": "2",
        "--test-limit": "64",
        "--samples": "16",
        "--out": "{out}",
    },  # fmt: skip
    "measure": {"--samples": "32"},
    "search": {
        **_SMALL,
        "--methods": "autotune,fixed",
        "--epochs": "1",
        "--check-epochs": "1",
        "--val-split": "32",
        "--samples": "16",
        "--out": "{out}",
    },  # fmt: skip
    "prune": {
        "--dataset": "synthetic",
        "--test-limit": "64",
        "--n-samples": "32",
        "--out": "{out}",
    },  # fmt: skip
    "sweep": {"--dry-run": ""},
    "datasets": {},
    "report": {},
}
# Options shrunk only where the README's command uses them (they change the model).
SHRINK = {
    "--layers": ["--layers", "10", "--width-mult", "1/16"],
    "--start-blocks": ["--start-blocks", "1,1,1,1", "--width-mult", "1/16"],
    "--blocks": ["--blocks", "1,1,1,1", "--width-mult", "1/16"],
    "--depth": ["--depth", "4"],
    "--width": ["--width", "8"],
    "--remove": ["--remove", "1"],
    "--compare": ["--max-remove", "2", "--random-repeats", "2"],
}
# Never run (network or a long job); parsed and --help only.
NO_RUN = ("--download", "--ray-address")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def cbundles_commands(text: str) -> list[str]:
    """Command lines starting with `cbundles` in ```bash blocks (continuations joined,
    comments dropped) and inline `cbundles ...` code spans, in order, without duplicates."""
    found = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "cbundles":
                found.append(shlex.join(words))
    for span in re.findall(r"`(cbundles [^`]+)`", text):
        found.append(shlex.join(shlex.split(span)))
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------------------ python blocks
BLOCKS = python_blocks(README.read_text())


def test_readme_has_snippets_and_commands():
    text = README.read_text()
    assert len(BLOCKS) >= 3 and len(cbundles_commands(text)) >= 8


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_python_snippet_runs(i, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # snippets may write runs/...
    monkeypatch.setenv("CBUNDLES_DATA", str(tmp_path / "data"))
    code = compile(BLOCKS[i], f"README.md python block {i + 1}", "exec")
    exec(code, {"__name__": f"readme_{i}"})
    capsys.readouterr()


# ----------------------------------------------------------------------------- cbundles lines
@pytest.fixture(scope="module")
def cli():
    from conflicting_bundles.cli import app

    return app, typer.main.get_command(app)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cli):
    """A trained tiny resnet run directory, standing in for RUN_DIR / runs/... in the README."""
    out = tmp_path_factory.mktemp("readme") / "run"
    args = ["train", "--model", "resnet", "--layers", "10", "--width-mult", "1/16"]
    args += ["--dataset", "synthetic", "--epochs", "1", "--train-limit", "128"]
    args += ["--test-limit", "64", "--samples", "16", "--out", str(out)]
    res = CliRunner().invoke(cli[0], args)
    assert res.exit_code == 0, res.output
    return out


def _options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


def _substitute(words: list[str], run: Path) -> list[str]:
    """Placeholders (RUN_DIR, runs/... that do not exist) -> the tiny run; repository files
    (experiments/...) -> absolute paths."""
    out = []
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        if re.fullmatch(r"[A-Z][A-Z_]+", w) or (
            w.startswith("runs/") and prev not in ("--out", "-o") and not (REPO / w).exists()
        ):
            w = str(run)
        elif not w.startswith("-") and "/" in w and (REPO / w).exists():
            w = str(REPO / w)
        out.append(w)
    return out


def _tiny_args(sub: str, cmd: click.Command, words: list[str], out: Path) -> list[str]:
    have = _options(cmd)
    args = list(words)
    for opt, extra in SHRINK.items():
        if opt in words:
            args += [a for a in extra] if all(e in have for e in extra if e.startswith("-")) else []
    for opt, value in TINY[sub].items():
        if opt in have:
            args += [opt] + ([value.format(out=out)] if value else [])
    return args


def test_every_readme_command(cli, tiny_run, tmp_path, monkeypatch, capsys):
    app, group = cli
    monkeypatch.setenv("CBUNDLES_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    commands = cbundles_commands(README.read_text())
    runner = CliRunner()
    failures, ran, helped = [], [], []
    seen: set[tuple[str, frozenset]] = set()
    durations: list[tuple[float, str]] = []
    for n, line in enumerate(commands):
        words = _substitute(shlex.split(line)[1:], tiny_run)
        sub = words[0]
        cmd = group.get_command(click.Context(group), sub)
        if cmd is None:
            failures.append(f"{line}: no such command {sub!r}")
            continue
        try:  # validate-only: parses every option and value as written, runs nothing
            cmd.make_context(sub, list(words[1:]), resilient_parsing=False)
        except click.exceptions.Exit:
            pass
        except click.ClickException as e:
            failures.append(f"{line}: {e.format_message()}")
            continue
        res = runner.invoke(app, [sub, "--help"])
        if res.exit_code != 0:
            failures.append(f"{line}: --help exit {res.exit_code}")
            continue
        signature = (sub, frozenset(w for w in words if w.startswith("-")))
        if sub in TINY and not any(w in NO_RUN for w in words) and signature not in seen:
            seen.add(signature)  # the same options as a command already run: parse + help
            args = _tiny_args(sub, cmd, words, tmp_path / f"out{n}")
            t0 = time.perf_counter()
            res = runner.invoke(app, args)
            durations.append((time.perf_counter() - t0, sub))
            if res.exit_code != 0:
                failures.append(f"{shlex.join(args)}: exit {res.exit_code}\n{res.output[-2000:]}")
                continue
            ran.append(line)
        else:
            helped.append(line)
    with capsys.disabled():
        print(
            f"\nREADME: {len(commands)} cbundles commands checked: {len(ran)} run at tiny scale, "
            f"{len(helped)} parsed + --help only; slowest: "
            + ", ".join(f"{sub} {t:.1f} s" for t, sub in sorted(durations, reverse=True)[:3])
        )
    assert not failures, "\n\n".join(failures)
    assert len(ran) + len(helped) == len(commands) and len(ran) >= 6


# ------------------------------------------------------------------ as a reader types them
def setup_lines(text: str) -> list[str]:
    """The shell lines of the README's first ```bash block that are not `make` targets: the
    step that puts `cbundles` on PATH after `make run` / `make test` (issue 24, item 1)."""
    block = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)[0]
    lines = [shlex.split(ln, comments=True) for ln in block.splitlines()]
    return [shlex.join(w) for w in lines if w and w[0] != "make"]


def test_readme_commands_run_in_a_shell_after_its_setup_lines(tmp_path):
    """In a fresh shell whose PATH holds no venv, the README's set-up lines followed by a
    command of its table, typed as written, find `cbundles` and succeed."""
    import subprocess
    import sys

    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("checks the README's .venv (run by `make test`)")  # e.g. .venv-vision
    steps = setup_lines(README.read_text())
    assert steps, "the README's first bash block has no step after `make` (activation)"
    typed = next(c for c in cbundles_commands(README.read_text()) if c == "cbundles datasets")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CBUNDLES_DATA": str(tmp_path / "d")}
    script = " && ".join([*steps, "command -v cbundles", typed])
    res = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    found = Path(res.stdout.splitlines()[0]).resolve()
    assert found == (REPO / ".venv" / "bin" / "cbundles").resolve()
