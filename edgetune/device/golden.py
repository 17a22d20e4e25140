"""What the user sees of the golden check a bundle ran on the board: a summary line per model, and the
first failed case as a CheckFailed."""

from __future__ import annotations

from edgetune.core.errors import CheckFailed
from edgetune.device.results import greedy_summary


def golden_summary(doc: dict) -> str:
    """One line per model: how the golden check went on the device."""
    g = doc["golden"]
    lines = []
    for name, m in g["models"].items():
        if g["kind"] == "greedy":
            lines.append(f"golden {name}: {greedy_summary(m)}: {'pass' if m['passed'] else 'FAIL'}")
        else:
            lines.append(
                f"golden {name}: {m['cases'] - len(m['failures'])}/{m['cases']} cases within tolerance, "
                f"max|diff| {m['max_abs_diff']:.3g}, min cosine {m['min_cosine']:.6f}, labels equal "
                f"{m['label_agreement']:.3f}: {'pass' if m['passed'] else 'FAIL'}"
            )
    return "\n".join(lines)


def golden_failure(doc: dict, where: str) -> CheckFailed:
    """The first failed golden case, by how much, as one line."""
    g = doc["golden"]
    failed = [n for n, m in g["models"].items() if not m["passed"]]
    also = f"; {', '.join(failed[1:])} failed too" if len(failed) > 1 else ""
    for name, m in g["models"].items():
        if m["passed"]:
            continue
        if g["kind"] == "greedy":
            f = m["failures"][0] if m["failures"] else {"case": "?", "prompt": "", "prompt_ids_equal": True}
            what = []
            if "step" in f:
                what.append(
                    f"token {f['step']}: max|diff| {f['max_abs_diff']:.4g} against PyTorch over the host's top "
                    f"logits (<= {m['max_abs_diff_limit']:g}), device token {f['device']} (host {f['host']}"
                    + ("" if f["in_host_top"] else ", not among the host's top tokens")
                    + ")"
                )
            if not f["prompt_ids_equal"]:
                what.append("the prompt tokenizes differently on the device")
            return CheckFailed(
                f"golden check failed on {where} ({name}): {len(m['failures'])}/{m['cases']} prompts; "
                f"case {f['case']} '{f['prompt'][:40]}': {'; '.join(what)}{also}"
            )
        f = m["failures"][0]
        return CheckFailed(
            f"golden check failed on {where} ({name}): {len(m['failures'])}/{m['cases']} cases; case "
            f"{f['case']} '{f['text'][:40]}': max|diff| {f['max_abs_diff']:.4g} (<= "
            f"{g.get('max_abs_diff_limit', '?')}), cosine {f['cosine']:.6f} (>= "
            f"{g.get('min_cosine_limit', '?')}), label {f['label']} (PyTorch {f['pytorch_label']}){also}"
        )
    return CheckFailed(f"golden check failed on {where}")
