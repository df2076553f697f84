"""A ledger of the papers' claims: what DeepSeek reported, what this package measures, and whether they agree.

The DeepSeek papers (DeepSeekMoE, DeepSeekMath, V2, V3, R1, V3.2) make quantitative claims: MLA caches
as much as GQA with 2.25 groups, the auxiliary-loss-free bias balances experts better than a loss, the
MTP module's second token is accepted 85-90 % of the time, distilling R1 beats RL on a small model.
A course that quotes them should say which ones it has checked, how, and with what result. The ledger
does that, in one data file, ``chapters/13_ablations/claims.json``: a list of entries, each with

    id          a slug, e.g. ``mla-cache-gqa-groups``
    claim       the claim in one sentence
    source      paper and section or table, e.g. "DeepSeek-V2 §2.1.4, Table 1"
    paper       the paper's number or statement
    command     the command that measures it here: ``minideepseek SUBCOMMAND ...`` or
                ``python -m minideepseek.MODULE ...``
    result      where that command recorded the number: {"file": a JSON file of the repository,
                "key": a dotted path into it, e.g. "summary.bias.max_vio.mean"}, optionally with
                "minus" or "divided_by": {"key": ..., "file": ... (default: the same file)} for a
                difference or a ratio of two recorded numbers; null when nothing is recorded yet
    ours        how to print our value: a Python format string of ``value`` (and of ``percent``, the
                value times 100, for differences in percentage points), e.g. "{value:.1%}"
    reproduces  a test of our value that says the paper's claim holds here, e.g.
                {"op": "close", "value": 71.1, "rel": 0.001} or {"op": ">", "value": 0}
    direction   (optional) a weaker test: only the sign or direction of the effect holds
    status      "reproduced" | "direction only" | "not reproducible at this scale" | "not yet measured"
    note        why, briefly: what differs from the paper's setting, what is left to do

Operators of a test: ``<``, ``<=``, ``>``, ``>=``, ``close`` (with ``rel`` and/or ``abs`` tolerance)
and ``between`` (``low`` and ``high``, both included).

**The check.** ``minideepseek claims`` prints the ledger as a table and checks every entry against
the files it names. It exits with status 1, one line per broken entry, when

* the command names no subcommand of ``minideepseek`` (``cli.build_parser``) or no runnable module;
* a measured entry's result file or key is missing, or the key holds no number;
* the status disagrees with the value: *reproduced* needs ``reproduces`` to hold; *direction only*
  needs ``direction`` to hold and ``reproduces`` not to; *not reproducible at this scale* needs
  neither to hold; *not yet measured* needs the result to be unrecorded (null, or a file not yet
  written; once the file holds the number, the status must say what it shows).

So a status cannot drift from its evidence: rerun a study, and the check says which statuses the new
numbers no longer support.

**Facts.** Some numbers the package computes exactly and in seconds, from the configs and its own
simulations: parameter counts, KV-cache sizes, the YaRN factor, FP8 weight bytes, the emulated
accumulation error, the DualPipe schedules' bubbles, the sparse attention's FLOPs. ``minideepseek
claims --record-facts`` (``compute_facts``) writes them to ``chapters/13_ablations/results/facts.json``,
and a test recomputes them and compares, so that file cannot go stale.

**The page.** ``docs/claims.md`` is the ledger rendered as Markdown (``render_markdown``); rewrite it
with ``python -m minideepseek.claims --markdown docs/claims.md``. A test checks that it matches the ledger and
the recorded results.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import shlex
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runfolder import atomic_path, read_json, write_json
from .validation import UserError

ROOT = Path(__file__).resolve().parents[1]
LEDGER = ROOT / "chapters" / "13_ablations" / "claims.json"
FACTS = ROOT / "chapters" / "13_ablations" / "results" / "facts.json"
PAGE = ROOT / "docs" / "claims.md"
FACTS_COMMAND = "minideepseek claims --record-facts"

REPRODUCED, DIRECTION_ONLY, NOT_AT_THIS_SCALE, NOT_YET_MEASURED = (
    "reproduced", "direction only", "not reproducible at this scale", "not yet measured")
STATUSES = (REPRODUCED, DIRECTION_ONLY, NOT_AT_THIS_SCALE, NOT_YET_MEASURED)
OPERATORS = ("<", "<=", ">", ">=", "close", "between")
FIELDS = {"id", "claim", "source", "paper", "command", "result", "ours", "reproduces", "direction", "status", "note"}
OPTIONAL_FIELDS = {"direction"}
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class LedgerError(UserError):
    """A ledger file that cannot be read as a list of entries (a missing field, an unknown operator, ...)."""


# --------------------------------------------------------------------------- the entries
@dataclass(frozen=True)
class Claim:
    """One entry of the ledger (the fields are described in the module's docstring)."""

    id: str
    claim: str
    source: str
    paper: str
    command: str
    result: dict[str, Any] | None
    ours: str
    reproduces: dict[str, Any]
    direction: dict[str, Any] | None
    status: str
    note: str


def _check_test(where: str, test: Any) -> None:
    if not isinstance(test, dict) or test.get("op") not in OPERATORS:
        raise LedgerError(f"{where}: a test is an object with an 'op' among {', '.join(OPERATORS)}, got {test!r}")
    op = test["op"]
    needed = {"between": {"low", "high"}}.get(op, {"value"})
    allowed = needed | {"op"} | ({"rel", "abs"} if op == "close" else set())
    if not needed <= test.keys() or not test.keys() <= allowed:
        raise LedgerError(f"{where}: the test {op!r} takes {', '.join(sorted(allowed - {'op'}))}, got {test!r}")
    if op == "close" and not {"rel", "abs"} & test.keys():
        raise LedgerError(f"{where}: the test 'close' needs a tolerance, 'rel' or 'abs', got {test!r}")
    for name in allowed - {"op"}:
        if name in test and not _is_number(test[name]):
            raise LedgerError(f"{where}: {name} must be a number, got {test[name]!r}")


def _check_reference(where: str, reference: Any, needs_file: bool) -> None:
    required = {"file", "key"} if needs_file else {"key"}
    if not isinstance(reference, dict) or not required <= reference.keys() or not reference.keys() <= {"file", "key"}:
        raise LedgerError(f"{where}: expected an object with {' and '.join(sorted(required))}, got {reference!r}")
    if "file" in reference:
        file = reference["file"]
        if not isinstance(file, str) or not file.endswith(".json") or Path(file).is_absolute() or ".." in Path(file).parts:
            raise LedgerError(f"{where}: 'file' must be a JSON file given relative to the repository, got {file!r}")
    if not isinstance(reference["key"], str) or not reference["key"]:
        raise LedgerError(f"{where}: 'key' must be a dotted path such as 'summary.mla.val_bpb.mean'")


def parse_claim(raw: Any, index: int) -> Claim:
    """One ledger entry checked for its form (not yet against the files it names)."""
    if not isinstance(raw, dict):
        raise LedgerError(f"entry {index} is not an object")
    where = f"entry {index} ({raw.get('id', 'no id')})"
    missing, unknown = FIELDS - OPTIONAL_FIELDS - raw.keys(), raw.keys() - FIELDS
    if missing or unknown:
        raise LedgerError(f"{where}: " + "; ".join(
            part for part in (missing and f"missing {', '.join(sorted(missing))}",
                              unknown and f"unknown {', '.join(sorted(unknown))}") if part))
    for name in FIELDS - {"result", "reproduces", "direction"}:
        if not isinstance(raw[name], str) or not raw[name].strip():
            raise LedgerError(f"{where}: {name} must be a non-empty string")
    if not SLUG.match(raw["id"]):
        raise LedgerError(f"{where}: id must be a lowercase slug such as 'mla-cache-gqa-groups'")
    if raw["status"] not in STATUSES:
        raise LedgerError(f"{where}: status must be one of {', '.join(repr(s) for s in STATUSES)}")
    try:
        raw["ours"].format(value=1.0, percent=100.0)
    except (KeyError, IndexError, ValueError) as error:
        raise LedgerError(f"{where}: 'ours' must be a format string of {{value}} or {{percent}}, e.g. "
                          f"'{{value:.1%}}' ({error!r})") from None
    _check_test(f"{where}, reproduces", raw["reproduces"])
    if raw.get("direction") is not None:
        _check_test(f"{where}, direction", raw["direction"])
    result = raw["result"]
    if result is None:
        if raw["status"] != NOT_YET_MEASURED:
            raise LedgerError(f"{where}: status {raw['status']!r} needs a recorded result, not null")
    else:
        if not isinstance(result, dict) or not result.keys() <= {"file", "key", "minus", "divided_by"}:
            raise LedgerError(f"{where}: result must be an object with file, key and optionally minus or divided_by")
        _check_reference(f"{where}, result", {k: result[k] for k in ("file", "key") if k in result}, needs_file=True)
        if "minus" in result and "divided_by" in result:
            raise LedgerError(f"{where}: result takes 'minus' or 'divided_by', not both")
        for name in ("minus", "divided_by"):
            if name in result:
                _check_reference(f"{where}, result.{name}", result[name], needs_file=False)
    return Claim(**{name: raw.get(name) for name in FIELDS})


def load_ledger(path: str | Path = LEDGER) -> list[Claim]:
    """The entries of a ledger file, each checked for its form; ids must be unique."""
    data = read_json(path, error=LedgerError)
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise LedgerError(f"{path}: expected an object with a list 'claims'")
    claims = [parse_claim(raw, index) for index, raw in enumerate(data["claims"])]
    seen: set[str] = set()
    for claim in claims:
        if claim.id in seen:
            raise LedgerError(f"{path}: the id {claim.id!r} appears twice")
        seen.add(claim.id)
    return claims


# --------------------------------------------------------------------------- values and tests
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Unrecorded(Exception):
    """The result file of an entry does not exist (yet)."""


def resolve(data: Any, key: str) -> Any:
    """``data["a"]["b"]["c"]`` for the key "a.b.c" (a list is indexed by a number); KeyError naming the
    first part that is not there."""
    node = data
    for depth, part in enumerate(key.split(".")):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            known = f" (it has {', '.join(sorted(map(str, node)))})" if isinstance(node, dict) else ""
            raise KeyError(f"no {'.'.join(key.split('.')[:depth + 1])!r}{known}")
    return node


def _read_number(root: Path, file: str, key: str, cache: dict[Path, Any]) -> float:
    path = root / file
    if path not in cache:
        if not path.exists():
            raise Unrecorded(file)
        cache[path] = read_json(path, error=LedgerError)
    try:
        value = resolve(cache[path], key)
    except KeyError as missing:
        raise LedgerError(f"{file}: {missing.args[0]}") from None
    if not _is_number(value):
        raise LedgerError(f"{file}: {key} holds {value!r}, not a number")
    return value


def measured_value(claim: Claim, root: Path = ROOT, cache: dict[Path, Any] | None = None) -> float | None:
    """Our value of ``claim``, read from its result file(s); None when it has no result or a file is not
    written yet; ``LedgerError`` when a file exists but the key does not resolve to a number."""
    result, cache = claim.result, {} if cache is None else cache
    if result is None:
        return None
    try:
        value = _read_number(root, result["file"], result["key"], cache)
        for name in ("minus", "divided_by"):
            if name in result:
                other = _read_number(root, result[name].get("file", result["file"]), result[name]["key"], cache)
                if name == "minus":
                    value = value - other
                elif other == 0:
                    raise LedgerError(f"{result[name].get('file', result['file'])}: {result[name]['key']} is 0, "
                                      "a ratio by it is undefined")
                else:
                    value = value / other
    except Unrecorded:
        return None
    return value


def holds(test: dict[str, Any] | None, value: float) -> bool:
    """Whether ``value`` passes a test of the ledger (False for a missing test)."""
    if test is None:
        return False
    op = test["op"]
    if op == "between":
        return test["low"] <= value <= test["high"]
    if op == "close":
        return math.isclose(value, test["value"], rel_tol=test.get("rel", 0.0), abs_tol=test.get("abs", 0.0))
    target = test["value"]
    return {"<": value < target, "<=": value <= target, ">": value > target, ">=": value >= target}[op]


def describe_test(test: dict[str, Any]) -> str:
    """A test in words, e.g. "value within 0.1 % of 71.1" or "value > 0"."""
    op = test["op"]
    if op == "between":
        return f"{_number(test['low'])} <= value <= {_number(test['high'])}"
    if op == "close":
        tolerances = []
        if test.get("rel"):
            tolerances.append(f"{_number(100 * test['rel'])} %")
        if test.get("abs") or not tolerances:
            tolerances.append(f"± {_number(test.get('abs', 0))}")
        return f"value within {' or '.join(tolerances)} of {_number(test['value'])}"
    return f"value {op} {_number(test['value'])}"


def _number(x: float) -> str:
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}" if abs(x) < 1e15 else f"{x:g}"
    return f"{x:.6g}"


def implied_status(claim: Claim, value: float) -> str:
    """The status that our value supports, from the entry's two tests."""
    if holds(claim.reproduces, value):
        return REPRODUCED
    if holds(claim.direction, value):
        return DIRECTION_ONLY
    return NOT_AT_THIS_SCALE


def format_ours(claim: Claim, value: float | None) -> str:
    return "not measured" if value is None else claim.ours.format(value=value, percent=100 * value)


# --------------------------------------------------------------------------- commands
def cli_commands() -> dict[str, Any]:
    """The subcommand tree of ``minideepseek`` (``cli.build_parser``): {name: subtree}, {} at a leaf."""
    from .cli import build_parser

    def tree(parser: argparse.ArgumentParser) -> dict[str, Any]:
        for action in parser._actions:  # argparse keeps its subparsers in a private list
            if isinstance(action, argparse._SubParsersAction):
                return {name: tree(sub) for name, sub in action.choices.items()}
        return {}

    return tree(build_parser())


def _runnable_module(name: str) -> bool:
    """Whether ``python -m name`` runs something: a package with ``__main__`` or a module with a main block."""
    if not re.fullmatch(r"minideepseek(\.[A-Za-z_][A-Za-z0-9_]*)+", name):
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__
        return importlib.util.find_spec(name + ".__main__") is not None
    return re.search(r"^if __name__ == ['\"]__main__['\"]:", Path(spec.origin).read_text(encoding="utf-8"),
                     re.MULTILINE) is not None


def command_problem(command: str, commands: dict[str, Any]) -> str | None:
    """Why ``command`` would not run here (None when it would): a subcommand or module that does not exist."""
    try:
        words = shlex.split(command)
    except ValueError as error:
        return f"cannot split the command: {error}"
    if words[:1] == ["minideepseek"]:
        tree, path = commands, ["minideepseek"]
        for word in words[1:]:
            if not tree:
                break
            if word not in tree:
                return f"'{' '.join(path)}' has no subcommand {word!r} (it has {', '.join(sorted(tree))})"
            tree, path = tree[word], path + [word]
        if tree and len(path) == len(words):
            return f"'{' '.join(path)}' needs a subcommand ({', '.join(sorted(tree))})"
        return None
    if words[:2] == ["python", "-m"] and len(words) > 2:
        return None if _runnable_module(words[2]) else f"'python -m {words[2]}': no such runnable module"
    return "a command starts with 'minideepseek SUBCOMMAND' or 'python -m minideepseek.MODULE'"


# --------------------------------------------------------------------------- the check
@dataclass
class Checked:
    """An entry, our value (None when not recorded) and what is wrong with it (empty when nothing)."""

    claim: Claim
    value: float | None
    problems: list[str]


def check_ledger(claims: list[Claim], root: Path = ROOT, commands: dict[str, Any] | None = None) -> list[Checked]:
    """Check every entry: its command exists, its result is recorded where its status says it is, and the
    status is the one its value supports (see the module's docstring)."""
    commands = cli_commands() if commands is None else commands
    cache: dict[Path, Any] = {}
    checked = []
    for claim in claims:
        problems = []
        problem = command_problem(claim.command, commands)
        if problem:
            problems.append(f"command: {problem}")
        try:
            value = measured_value(claim, root, cache)
        except LedgerError as error:
            value = None
            problems.append(f"result: {error}")
        if value is None and not problems and claim.status != NOT_YET_MEASURED:
            problems.append(f"result: {claim.result['file']} does not exist, but the status is {claim.status!r}")
        if value is not None:
            implied = implied_status(claim, value)
            if claim.status != implied:
                tests = [f"reproduces: {describe_test(claim.reproduces)}"]
                tests += [f"direction: {describe_test(claim.direction)}"] if claim.direction else []
                problems.append(f"status {claim.status!r} disagrees with our value {_number(value)} "
                                f"({'; '.join(tests)}): it supports {implied!r}")
        checked.append(Checked(claim, value, problems))
    return checked


def status_counts(checked: list[Checked]) -> dict[str, int]:
    return {status: sum(c.claim.status == status for c in checked) for status in STATUSES}


# --------------------------------------------------------------------------- rendering
def render_table(checked: list[Checked], width: int | None = None) -> str:
    """The ledger as a text table (id, source, paper, ours, status), long cells wrapped; at least ~145
    characters wide, wider when the terminal is."""
    width = width or shutil.get_terminal_size((145, 24)).columns
    minimum = {"id": max(len(c.claim.id) for c in checked), "source": 24, "paper": 32, "ours": 28, "status": 16}
    extra = max(0, width - sum(minimum.values()) - 2 * (len(minimum) - 1))
    widths = {**minimum, "source": minimum["source"] + extra // 4, "paper": minimum["paper"] + extra // 2,
              "ours": minimum["ours"] + extra - extra // 4 - extra // 2}
    header = {"id": "id", "source": "source", "paper": "paper", "ours": "ours", "status": "status"}
    lines = ["  ".join(header[name].ljust(w) for name, w in widths.items()).rstrip(),
             "-" * (sum(widths.values()) + 2 * (len(widths) - 1))]
    for c in checked:
        cells = {"id": c.claim.id, "source": c.claim.source, "paper": c.claim.paper,
                 "ours": format_ours(c.claim, c.value), "status": c.claim.status}
        wrapped = {name: textwrap.wrap(cells[name], w) or [""] for name, w in widths.items()}
        for row in range(max(map(len, wrapped.values()))):
            parts = [(wrapped[name][row] if row < len(wrapped[name]) else "").ljust(w) for name, w in widths.items()]
            lines.append("  ".join(parts).rstrip())
    counts = status_counts(checked)
    lines += ["", f"{len(checked)} claims: " + ", ".join(f"{n} {status}" for status, n in counts.items())]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _reference(reference: dict[str, Any], file: str) -> str:
    other = reference.get("file", file)
    return f"`{reference['key']}`" + ("" if other == file else f" of `{other}`")


def render_markdown(checked: list[Checked]) -> str:
    """The site page (``docs/claims.md``): a summary table, then each claim's command, result and tests."""
    counts = status_counts(checked)
    lines = [
        "# The papers' claims, measured",
        "",
        "The quantitative claims of the DeepSeek papers that this project can test, each with the command that",
        "measures it here, the file the result is recorded in, and a verdict. The ledger is one data file,",
        "`chapters/13_ablations/claims.json`; `minideepseek claims` prints it and checks it: each command must",
        "exist, each measured result must be in its file, and each status must be the one the recorded value",
        "supports (module `minideepseek.claims`). This page is generated from the ledger",
        "(`python -m minideepseek.claims --markdown docs/claims.md`), and the tests check that it is up to date.",
        "",
        "The statuses:",
        "",
        "* **reproduced**: our value passes the entry's test for the paper's claim;",
        "* **direction only**: the effect has the paper's sign or direction, not its size;",
        "* **not reproducible at this scale**: neither holds for our models, of at most a few million",
        "  parameters and trained for minutes on a CPU (each note says why);",
        "* **not yet measured**: nothing recorded yet; the command says how to measure it (some need a GPU).",
        "",
        f"{len(checked)} claims: " + ", ".join(f"{n} {status}" for status, n in counts.items()) + ".",
        "",
        "| claim | source | paper | ours | status |",
        "|---|---|---|---|---|",
    ]
    for c in checked:
        lines.append(f"| [{_cell(c.claim.claim)}](#{c.claim.id}) | {_cell(c.claim.source)} | {_cell(c.claim.paper)} | "
                     f"{_cell(format_ours(c.claim, c.value))} | {c.claim.status} |")
    lines += ["", "## Each claim", ""]
    for c in checked:
        claim, result = c.claim, c.claim.result
        lines += [f"### {claim.id}", "", _cell(claim.claim), "",
                  f"* **Source:** {_cell(claim.source)}. **Paper:** {_cell(claim.paper)}",
                  f"* **Command:** `{claim.command}`"]
        if result is None:
            lines.append("* **Result:** not recorded yet")
        else:
            recorded = f"`{result['key']}` of `{result['file']}`"
            if "minus" in result:
                recorded += f" minus {_reference(result['minus'], result['file'])}"
            if "divided_by" in result:
                recorded += f" divided by {_reference(result['divided_by'], result['file'])}"
            lines.append(f"* **Result:** {recorded}: " + ("not written yet" if c.value is None else
                                                           _cell(format_ours(claim, c.value))))
        tests = f"* **Reproduced when** `{describe_test(claim.reproduces)}`"
        if claim.direction:
            tests += f"; **direction holds when** `{describe_test(claim.direction)}`"
        lines += [tests, f"* **Status: {claim.status}.** {_cell(claim.note)}", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- facts
# DeepSeek LLM 67B (the DeepSeek LLM paper, Table 2), the model V2's KV-cache figure is measured against:
# 95 layers, grouped-query attention with 8 key/value heads of 128 dimensions, cached in BF16.
DEEPSEEK_67B = {"n_layers": 95, "n_kv_heads": 8, "head_dim": 128}
V2_KV_BITS = 6  # V2 §3.2.3: its deployed KV cache is quantised to 6 bits per element on average


def _parameter_facts(preset: str) -> dict[str, int]:
    from .config import ModelConfig
    from .params import count_parameters

    config = ModelConfig.from_preset(preset)
    count = count_parameters(config)
    facts = {"total": count.total, "activated": count.activated,
             "activated_without_embedding": count.activated_without_embedding}
    if config.n_mtp_layers:
        embedding_and_head = 2 * config.vocab_size * config.dim  # the MTP layer's own copies in the checkpoint
        facts |= {"mtp_module": count.mtp, "checkpoint_with_mtp": count.total + count.mtp + embedding_and_head}
    return facts


def _kv_cache_facts() -> dict[str, Any]:
    from .config import ModelConfig

    v3, v2 = ModelConfig.from_preset("v3-671b"), ModelConfig.from_preset("v2-236b")
    head_dim = v3.v_head_dim  # d_h of the V2 paper's Table 1: 128
    latent = v3.kv_lora_rank + v3.qk_rope_head_dim  # d_c + d_h^R = 512 + 64
    per_head = v3.n_heads * (v3.qk_head_dim + v3.v_head_dim)  # the keys (192 wide) and values it stands for
    mha = 2 * v3.n_heads * head_dim  # Table 1's MHA: 2 n_h d_h
    v2_latent = v2.kv_lora_rank + v2.qk_rope_head_dim
    bf16_67b = 2 * DEEPSEEK_67B["n_kv_heads"] * DEEPSEEK_67B["head_dim"] * DEEPSEEK_67B["n_layers"] * 2
    v2_bf16, v2_quantised = v2_latent * v2.n_layers * 2, v2_latent * v2.n_layers * V2_KV_BITS / 8
    return {
        "v3_latent_values_per_layer": latent, "v3_per_head_values_per_layer": per_head,
        "v3_mha_values_per_layer": mha,
        "per_head_over_latent": per_head / latent, "mha_over_latent": mha / latent,
        "latent_in_head_dims": latent / head_dim, "gqa_groups_equivalent": latent / (2 * head_dim),
        "v2_vs_deepseek_67b": {
            "deepseek_67b_bytes_per_token_bf16": bf16_67b, "v2_bytes_per_token_bf16": v2_bf16,
            "v2_bytes_per_token_6bit": v2_quantised,
            "reduction_bf16": 1 - v2_bf16 / bf16_67b, "reduction_6bit": 1 - v2_quantised / bf16_67b},
    }


def _yarn_facts() -> dict[str, float]:
    from .config import ModelConfig
    from .rope import softmax_scale

    config = ModelConfig.from_preset("v3-671b")
    plain = config.qk_head_dim ** -0.5
    scale = softmax_scale(config)
    return {"softmax_scale": scale, "softmax_scale_without_yarn": plain, "mscale": math.sqrt(scale / plain)}


def _fp8_facts() -> dict[str, Any]:
    import torch

    from .fp8 import GRANULARITIES
    from .fp8_experiments import accumulation_errors, inject_outlier_channels, quantization_error
    from .config import ModelConfig
    from .params import count_parameters

    count = count_parameters(ModelConfig.from_preset("v3-671b"))
    (unpromoted, promoted), = accumulation_errors(ks=(4096,)).values()
    x = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))
    with_outliers, ordinary = inject_outlier_channels(x, 1e4)
    plain = {name: quantization_error(x, name) for name in GRANULARITIES}
    errors = {name: quantization_error(with_outliers, name, ordinary) for name in GRANULARITIES}
    return {
        "v3_weight_bytes": {"bf16": count.bytes_bf16, "fp8": count.bytes_fp8, "fp8_over_bf16": count.bytes_fp8 / count.bytes_bf16},
        "accumulation_k4096": {"unpromoted": unpromoted, "promoted_every_128": promoted,
                               "unpromoted_over_promoted": unpromoted / promoted},
        "no_outliers": {"relative_error": plain},
        "outlier_channels_1e4": {"relative_error": errors,
                                 "per_tensor_over_1x128": errors["per-tensor"] / errors["1x128"]},
    }


def _dualpipe_facts(pp: int = 8, micro_batches: int = 20) -> dict[str, Any]:
    from .dualpipe import Costs, table2

    costs = Costs(F=3, B=5, W=2, FB=7)
    rows = table2(pp, micro_batches, costs)
    methods = {row.method: {"bubble_simulated": row.bubble, "bubble_table2": row.bubble_formula,
                            "activations_simulated": row.activations, "activations_table2": row.activations_formula,
                            "parameter_copies": row.parameters} for row in rows}
    deviation = max(abs(row.bubble - row.bubble_formula) / row.bubble_formula for row in rows)
    return {"pp": pp, "micro_batches": micro_batches, "costs": vars(costs), "methods": methods,
            "max_relative_bubble_deviation": deviation,
            "dualpipe_activations_minus_pp": methods["DualPipe"]["activations_simulated"] - pp}


def _sparse_attention_facts(context: int = 131072) -> dict[str, Any]:
    from .config import ModelConfig
    from .sparse_attention import attention_flops, crossover

    config = ModelConfig.from_preset("v3.2-671b")
    per_key = {name: float(value) for name, value in attention_flops(config, 1).items()}
    at_context = {name: float(value) for name, value in attention_flops(config, context).items()}
    return {"index_topk": config.index_topk, "flops_per_key": per_key,
            "indexer_over_dense_mqa_per_key": per_key["indexer"] / per_key["dense MQA"],
            "context": context, "flops_at_context": at_context,
            "sparse_over_dense_mqa_at_context": at_context["sparse (indexer + top-k MQA)"] / at_context["dense MQA"],
            "crossover_vs_dense_mqa": crossover(config)}


def compute_facts() -> dict[str, Any]:
    """Every number the package computes exactly from configs and simulations (a few seconds on a CPU)."""
    return {
        "about": "Numbers minideepseek computes from its configs and simulations; the claims ledger "
                 "(chapters/13_ablations/claims.json) reads them. Rewritten by the command below.",
        "command": FACTS_COMMAND,
        "parameters": {preset: _parameter_facts(preset) for preset in ("v3-671b", "v2-236b", "v2-lite-16b")},
        "kv_cache": _kv_cache_facts(),
        "yarn": _yarn_facts(),
        "fp8": _fp8_facts(),
        "dualpipe": _dualpipe_facts(),
        "sparse_attention": _sparse_attention_facts(),
    }


def record_facts(path: str | Path = FACTS) -> dict[str, Any]:
    """Compute the facts and write them (atomically) to ``path``."""
    facts = compute_facts()
    write_json(path, facts)
    return facts


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``minideepseek claims``: print the ledger, check it; 0 when consistent, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="minideepseek claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", default=str(LEDGER), help="the ledger file (default: chapters/13_ablations/claims.json)")
    parser.add_argument("--record-facts", action="store_true",
                        help="first recompute the exact numbers (parameter counts, cache sizes, ...) into "
                             "chapters/13_ablations/results/facts.json")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="PATH",
                        help="print the site page's Markdown instead of the table, or write it to PATH")
    args = parser.parse_args(argv)
    try:
        if args.record_facts:
            record_facts()
            print(f"wrote {FACTS.relative_to(ROOT)}", file=sys.stderr)
        checked = check_ledger(load_ledger(args.ledger))
    except UserError as error:
        print(f"minideepseek claims: {error}", file=sys.stderr)
        return 1
    if args.markdown == "-":
        print(render_markdown(checked), end="")
    elif args.markdown:
        with atomic_path(args.markdown) as page:
            page.write_text(render_markdown(checked), encoding="utf-8")
        print(f"wrote {args.markdown}", file=sys.stderr)
    else:
        print(render_table(checked))
    failing = [c for c in checked if c.problems]
    for c in failing:
        for problem in c.problems:
            print(f"minideepseek claims: {c.claim.id}: {problem}", file=sys.stderr)
    if failing:
        print(f"minideepseek claims: {len(failing)} of {len(checked)} entries disagree with their evidence",
              file=sys.stderr)
    return 1 if failing else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m minideepseek.claims | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # keep Python's final flush quiet
        sys.exit(141)
