"""The model card (README.md) of an exported model: what it is, how to load it, how it scored,
what it was trained on and with which settings. Pure functions of what the run recorded.

Eval's report.md formats the same numbers through the same rows and cells (stages/reports.py),
so a card and its run's report never disagree: `25.0% [18.2, 31.9]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proactive_rl.stages.reports import METRIC_ROWS, cell, table


@dataclass
class CardInputs:
    """Everything the card shows, gathered by the stage from the run directory."""

    title: str  # e.g. "default: policy_3"
    source: str  # the checkpoint folder, relative to the run directory
    spec: str  # the checkpoint as the user named it
    run_dir: str
    label: str  # the checkpoint's column name in eval reports (policy_3)
    dtype: str
    parameters: int
    marker: dict[str, Any] = field(default_factory=dict)  # the checkpoint's STABLE.json, no files
    adapter: dict[str, Any] | None = None  # adapter_config.json of a merged LoRA policy
    base: str | None = None  # the base the adapter was merged into
    configs: dict[str, Any] = field(default_factory=dict)  # configs/<stage>.json by stage
    data: dict[str, Any] = field(default_factory=dict)  # data/processed's marker, no files
    data_from: str = ""  # where `data` was read
    reports: dict[str, Any] = field(default_factory=dict)  # report.json by report name


def card(info: CardInputs) -> str:
    """README.md: front matter, then description, loading, evaluation, data and settings."""
    out = [*front_matter(info), f"# {info.title}", "", *summary(info), *usage()]
    out += evaluation_section(info.reports, info.label)
    out += data_section(info.data, info.data_from)
    out += settings_section(info.configs, info.marker)
    return "\n".join(out) + "\n"


def front_matter(info: CardInputs) -> list[str]:
    """The Hub's metadata block. No base_model: the run's base is a local folder, and the Hub
    wants a repository id there (add it when you push, if the base came from the Hub)."""
    tags = ["proactive-rl", "grpo" if info.label.startswith("policy") else "sft"]
    if info.adapter is not None:
        tags.append("lora-merged")
    return [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        *[f"- {tag}" for tag in tags],
        "---",
        "",
    ]


def summary(info: CardInputs) -> list[str]:
    """What the folder holds and where it came from."""
    kind = "GRPO policy" if info.label.startswith("policy") else "SFT epoch"
    out = [
        f"Exported by `proactive export` from run `{info.run_dir}`, checkpoint `{info.spec}`: "
        f"the {kind} in `{info.source}` ({info.label} in the run's evaluation reports), "
        f"{info.parameters / 1e6:,.1f}M parameters in {info.dtype}, the checkpoint's own dtype.",
    ]
    if info.adapter is not None:
        adapter = info.adapter
        out += [
            "",
            f"The policy was trained as a LoRA adapter (r={adapter.get('r')}, "
            f"alpha={adapter.get('lora_alpha')}, modules "
            f"{', '.join(sorted(adapter.get('target_modules') or [])) or '?'}) on the frozen "
            f"model `{info.base}`; the adapter is merged into it here, so this is a plain "
            "model: no peft needed to load it.",
        ]
    return [*out, ""]


def usage() -> list[str]:
    return [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("PATH")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        "```",
        "",
        "PATH: this folder, or its repository id once pushed to the Hub. With vLLM: "
        '`vllm serve PATH`, or `vllm.LLM(model="PATH")`. The chat template is the '
        "tokenizer's; answers open with a `<think>` block and may hold a `<proactive>` block "
        "where the model says what it is unsure of.",
        "",
    ]


def evaluation_section(reports: dict[str, Any], label: str) -> list[str]:
    """Each report's metric x checkpoint table, this model's column marked."""
    out = ["## Evaluation", ""]
    if not reports:
        return out + ["The run has no evaluation report (`proactive eval` writes one).", ""]
    for name, report in reports.items():
        out += report_table(name, report, label)
    return out


def report_table(name: str, report: dict[str, Any], label: str) -> list[str]:
    """One report: what was evaluated how, the table with intervals, its acceptance checks."""
    checkpoints = report.get("checkpoints", [])
    sampling = report.get("settings", {}).get("eval", {}).get("sampling", {})
    out = [
        f"### Report `{name}`",
        "",
        f"Split `{report.get('split')}`: {report.get('questions')} questions x "
        f"n={report.get('n')} samples per checkpoint (temperature "
        f"{sampling.get('temperature')}, max_new_tokens {sampling.get('max_new_tokens')}), "
        "graded SimpleQA-style on the answer after the tags. Brackets: 95% bootstrap interval "
        "(questions resampled).",
        "",
    ]
    if not any(c.get("label") == label for c in checkpoints):
        out += [f"This report did not evaluate `{label}` (this model); shown for reference.", ""]
    header = [
        "metric",
        *[
            f"**{c['label']} (this model)**" if c["label"] == label else c["label"]
            for c in checkpoints
        ],
    ]
    rows = [[title] + [cell(c, key, kind) for c in checkpoints] for key, title, kind in METRIC_ROWS]
    out += table(header, rows)
    checks = report.get("acceptance", [])
    if checks:
        out += ["", "Acceptance checks of the report:", ""]
        for check in checks:
            mark = {True: "PASS", False: "FAIL"}.get(check.get("passed"), "n/a")
            out.append(f"- {mark}: {check.get('check')} — {check.get('detail', '')}")
    return [*out, ""]


def data_section(data: dict[str, Any], data_from: str) -> list[str]:
    """The training data as prep recorded it: inputs, sources, rows, the fingerprint."""
    out = ["## Training data", ""]
    if not data:
        return out + ["Not recorded (no evaluation report and no data/processed marker).", ""]
    inputs = data.get("inputs", {})
    rows = data.get("rows", {})
    out += [
        f"As `proactive prep` recorded it (read from {data_from}):",
        "",
        f"- SFT conversations: `{inputs.get('sft')}` ({rows.get('sft_train', '?')} rows, "
        f"{data.get('sft_proactive', '?')} with a proactive block)",
        f"- RL questions: `{json.dumps(inputs.get('rl'))}` ({rows.get('rl_train', '?')} train, "
        f"{rows.get('rl_test', '?')} held-out test rows)",
    ]
    if data.get("rl_sources"):
        out.append(f"- RL sources: `{json.dumps(data['rl_sources'], sort_keys=True)}`")
    if data.get("fingerprint"):
        out.append(f"- data fingerprint: `{data['fingerprint']}`")
    prep = data.get("config")
    if prep:
        out += ["", "prep settings:", "", "```json", json.dumps(prep, indent=2, sort_keys=True)]
        out.append("```")
    return [*out, ""]


def settings_section(configs: dict[str, Any], marker: dict[str, Any]) -> list[str]:
    """Each stage's resolved config (configs/<stage>.json) and the checkpoint's marker."""
    out = ["## Training settings", ""]
    if not configs:
        out += ["The run directory holds no configs/*.json.", ""]
    for stage, config in configs.items():
        out += [f"### {stage}", "", "```json", json.dumps(config, indent=2, sort_keys=True)]
        out += ["```", ""]
    if marker:
        out += ["### checkpoint marker (STABLE.json, file list left out)", "", "```json"]
        out += [json.dumps(marker, indent=2, sort_keys=True, default=str), "```", ""]
    return out
