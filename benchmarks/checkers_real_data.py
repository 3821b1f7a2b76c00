"""Answer checkers on real data: GSM8K's own solutions, and math-verify against string matching.

(a) GSM8K test (1,319 rows, ``../shared/data/gsm8k/test.jsonl``) through the ``gsm8k`` task: every row's
reference completions must score correct, and the same completions with the final number changed or hedged must
score wrong. Completions built from each row:

- ``reference_system2``: the task's System-2 reference (worked solution, ``</think>``, the number);
- ``original_answer_system1``: GSM8K's answer field verbatim as a System-1 completion (calculator annotations,
  many numbers, ``#### N`` at the end);
- ``rendered_system1``: the number as ``The answer is $1,234.`` (``$``, thousands separators, a sentence);
- ``boxed_system2``: the worked solution, then ``\\boxed{N}``;
- wrong ones: each of the first two with N replaced by N+1, the System-2 reference with N replaced by 10N, and a
  hedge ``N or N+1``.

(b) ``math`` (math-verify) against plain string matching on equivalent renderings of the same answer: a small
hand-written set of gold answers (fractions, expressions, intervals, tuples, sets, radicals, pi, large numbers;
plus 50 GSM8K gold numbers with simple renderings), each with several right renderings and a few wrong ones.
String matching is measured twice: ``exact`` (the text as written) and ``normalised`` (white space, ``$`` and one
``\\boxed{}`` wrapper removed). Counted: right renderings accepted (higher is better) and wrong ones accepted
(lower is better), for each matcher; the renderings each one gets wrong are listed.

    python benchmarks/checkers_real_data.py      # ~1 min on 2 loaded cores; writes results/checkers_real_data.json
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowthink.chat import Mode  # noqa: E402
from slowthink.tasks import get_task  # noqa: E402
from slowthink.tasks.checkers import math as math_checker  # noqa: E402
from slowthink.tasks.checkers.base import boxed_contents  # noqa: E402

GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
OUT = ROOT / "benchmarks" / "results" / "checkers_real_data.json"
TIMEOUT = 10.0  # seconds per math check: generous, the machine is shared; a timeout would be listed as a miss

# gold -> (right renderings, wrong renderings), as a completion's answer part would write them
MATH_SET: dict[str, tuple[list[str], list[str]]] = {
    r"\frac{1}{2}": (["0.5", "1/2", r"\dfrac{1}{2}", r"\frac12", r"\boxed{\frac{1}{2}}", ".5", r"\tfrac{1}{2}"],
                     [r"\frac{1}{3}", "2", "0.25"]),
    "x+1": (["1+x", r"\boxed{x+1}", "x + 1", r"\boxed{1 + x}"], ["x-1", "x", "2x"]),
    "(1,2]": (["(1, 2]", r"\left(1,2\right]", r"\boxed{(1,2]}"], ["[1,2]", "(1,2)"]),
    "(1,2)": (["(1, 2)", r"\left(1, 2\right)", r"\boxed{(1,2)}"], ["(2,1)", "(1,3)"]),
    r"\{1,2\}": ([r"\{2,1\}", r"\{1, 2\}", r"\boxed{\{2, 1\}}"], [r"\{1,3\}", r"\{1\}"]),
    r"2\sqrt{2}": ([r"\sqrt{8}", r"2 \sqrt 2", r"\sqrt{2} \cdot 2", r"\boxed{2\sqrt2}"], [r"\sqrt{2}", r"\sqrt{6}"]),
    r"\frac{\sqrt{3}}{2}": ([r"\frac{\sqrt3}{2}", r"\sqrt{3}/2", r"\frac{1}{2}\sqrt{3}"], [r"\frac{\sqrt{2}}{2}"]),
    r"\frac{\pi}{2}": ([r"\pi/2", r"\frac{1}{2}\pi", r"0.5\pi"], [r"\pi", r"\frac{\pi}{3}"]),
    "x^2-1": (["(x-1)(x+1)", "x^{2}-1", "-1+x^2", r"\boxed{(x+1)(x-1)}"], ["(x-1)^2", "x^2+1"]),
    r"[0,\infty)": ([r"[0, \infty)", r"\left[0,\infty\right)"], [r"(0,\infty)", r"[1,\infty)"]),
    r"-\frac{3}{4}": (["-0.75", "-3/4", r"\frac{-3}{4}", r"-\dfrac34"], ["0.75", r"\frac{3}{4}"]),
    "1000000": (["10^6", "1,000,000", "1000000.0", r"10^{6}"], ["100000", "10^7"]),
    r"\frac{5}{3}": ([r"1\frac{2}{3}", "5/3", r"1.\overline{6}"], ["1.6", r"\frac{3}{5}"]),
    "10\\%": (["10", r"10\%", "0.1"], ["1", "100"]),
    r"\text{(C)}": (["C", "(C)", r"\text{C}"], ["B", "(B)"]),
}


def gsm8k_forms(task, p, original: str) -> tuple[dict[str, tuple[str, Mode]], dict[str, tuple[str, Mode]]]:
    """Completions of one GSM8K row that must score correct, and ones that must score wrong (text, mode)."""
    gold = p.answer
    value = float(gold.replace(",", ""))
    bumped = str(int(value) + 1) if value.is_integer() else f"{value + 1:g}"
    tenfold = str(int(value) * 10) if value.is_integer() else f"{value * 10:g}"
    ref = task.reference(p, Mode.SYSTEM2)
    shown = f"{int(value):,}" if value.is_integer() else gold
    right = {"reference_system2": (ref.completion(), Mode.SYSTEM2),
             "original_answer_system1": (original, Mode.SYSTEM1),
             "rendered_system1": (f"The answer is ${shown}.", Mode.SYSTEM1),
             "boxed_system2": (f"{ref.reasoning}\n</think>\n\n\\boxed{{{gold}}}", Mode.SYSTEM2)}
    head, _, _ = original.rpartition("####")
    wrong = {"reference_plus_one": (f"{ref.reasoning}\n</think>\n\n{bumped}", Mode.SYSTEM2),
             "reference_times_ten": (f"{ref.reasoning}\n</think>\n\n{tenfold}", Mode.SYSTEM2),
             "original_answer_plus_one": (f"{head}#### {bumped}", Mode.SYSTEM1),
             "hedged": (f"{ref.reasoning}\n</think>\n\nThe answer is {gold} or {bumped}.", Mode.SYSTEM2)}
    return right, wrong


def bench_gsm8k() -> dict:
    task = get_task("gsm8k", path=str(GSM8K_TEST))
    originals = [json.loads(line)["answer"] for line in GSM8K_TEST.read_text().splitlines() if line.strip()]
    problems = task.problems()
    assert len(problems) == len(originals)
    counts: dict[str, dict[str, int]] = {}
    failures: list[dict] = []
    start = time.perf_counter()
    scored = 0
    for p, original in zip(problems, originals):
        right, wrong = gsm8k_forms(task, p, original)
        for expect, forms in ((True, right), (False, wrong)):
            for name, (text, mode) in forms.items():
                s = task.score(p, text, mode)
                scored += 1
                c = counts.setdefault(name, {"expected_correct": expect, "rows": 0, "as_expected": 0})
                c["rows"] += 1
                c["as_expected"] += s.correct == expect
                if s.correct != expect:
                    failures.append({"row": p.data["row"], "form": name, "gold": p.answer, "extracted": s.answer,
                                     "completion_end": text[-160:]})
    seconds = time.perf_counter() - start
    return {"data": str(GSM8K_TEST.relative_to(ROOT.parent)), "rows": len(problems), "forms": counts,
            "all_as_expected": not failures, "failures": failures[:50], "failures_total": len(failures),
            "scores": scored, "seconds": round(seconds, 2), "ms_per_score": round(1000 * seconds / scored, 3)}


def normalised(text: str) -> str:
    """Plain string matching's best effort: no white space, no ``$``, one ``\\boxed{}`` wrapper removed."""
    boxed = boxed_contents(text)
    text = boxed[-1] if boxed and text.strip().startswith("\\boxed") else text
    return re.sub(r"\s+", "", text).replace("$", "")


def gsm8k_numbers(n: int) -> dict[str, tuple[list[str], list[str]]]:
    """The first ``n`` GSM8K test gold numbers, each with plain renderings a model writes, and two wrong ones."""
    out = {}
    for line in GSM8K_TEST.read_text().splitlines()[:n]:
        gold = json.loads(line)["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        value = int(gold) if gold.lstrip("-").isdigit() else float(gold)
        right = [gold, f"{value}.0" if isinstance(value, int) else gold + "0", rf"\boxed{{{gold}}}", f"${gold}$"]
        if isinstance(value, int) and abs(value) >= 1000:
            right.append(f"{value:,}")
        out.setdefault(gold, (right, [str(value + 1), str(value * 10)]))
    return out


def bench_math_vs_strings() -> dict:
    sets = {"hand_written_latex": MATH_SET, "gsm8k_numbers": gsm8k_numbers(50)}
    report: dict = {}
    for set_name, golds in sets.items():
        tally = {m: {"right_accepted": 0, "wrong_accepted": 0} for m in ("exact_string", "normalised_string", "math")}
        misses: dict[str, list[dict]] = {m: [] for m in tally}
        n_right = n_wrong = 0
        start = time.perf_counter()
        checks = timeouts = 0
        for gold, (right, wrong) in golds.items():
            for expect, renderings in ((True, right), (False, wrong)):
                for text in renderings:
                    n_right += expect
                    n_wrong += not expect
                    result = math_checker.check(gold, text, timeout=TIMEOUT)
                    timeouts += result.reason.startswith("timeout")
                    verdicts = {"exact_string": text == gold, "normalised_string": normalised(text) == normalised(gold),
                                "math": result.correct}
                    checks += 1
                    for m, ok in verdicts.items():
                        tally[m]["right_accepted" if expect else "wrong_accepted"] += int(ok)
                        if ok != expect:
                            misses[m].append({"gold": gold, "answer": text, "expected": expect})
        seconds = time.perf_counter() - start
        report[set_name] = {"golds": len(golds), "right_renderings": n_right, "wrong_renderings": n_wrong,
                            "tally": tally, "mistakes": misses, "math_timeouts": timeouts,
                            "math_seconds": round(seconds, 2), "math_ms_per_check": round(1000 * seconds / checks, 1)}
    return report


def main() -> None:
    if not GSM8K_TEST.is_file():
        sys.exit(f"GSM8K is not at {GSM8K_TEST}: this benchmark needs the shared data folder")
    import math_verify

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = [round(v, 2) for v in os.getloadavg()]
    gsm8k = bench_gsm8k()
    math_vs_strings = bench_math_vs_strings()
    result = {
        "benchmark": "checkers_real_data",
        "command": "python benchmarks/checkers_real_data.py",
        "started_utc": started,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
                    "os": platform.platform(), "python": platform.python_version(),
                    "math_verify": getattr(math_verify, "__version__", "0.9.0"),
                    "load_average_at_start": load_start,
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "settings": {"math_timeout_s": TIMEOUT, "gsm8k_numbers": 50},
        "gsm8k": gsm8k,
        "math_vs_string_matching": math_vs_strings,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"gsm8k": {k: v for k, v in gsm8k.items() if k != "failures"},
                      "math_vs_string_matching": {k: v["tally"] for k, v in math_vs_strings.items()}}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
