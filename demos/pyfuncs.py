"""pyfuncs: an embedded demo data set for code generation — small Python functions with tests.

Each row is a spec, asserts that check it, the function's name, a one-line plan and a reference
solution (the README's codegen row format). Fourteen training families over numbers, strings and
lists — eight one-step ones that SmolLM2-135M mostly solves zero-shot, six two-step ones that it
mostly does not — each with random constants and names, so a student cannot pass by memorising one
answer per family. Ten more families are held out (`HELD_OUT`: six two-step, four one-step): no
training row comes from them, so pass@1 on them measures what generalises, not what was seen.

    rows = generate(200, seed=0)                      # training families
    held_out = generate(40, seed=1, families=HELD_OUT)
"""

from __future__ import annotations

import random

INSTRUCTION = (
    "You write Python. Answer with a one-line plan starting with 'Plan:', then the complete function "
    "in one ```python code block, and nothing else."
)

_WORDS = ["alpha", "delta", "kilo", "lima", "nova", "orbit", "pixel", "quartz", "sigma", "tango", "vega", "zulu"]


TRAIN = tuple(range(14))
HELD_OUT = tuple(range(14, 24))  # six two-step families (14-19), four one-step ones (20-23)


def _family(rng: random.Random, families: tuple[int, ...] = TRAIN) -> tuple[str, str, str, str, list[tuple[str, object]]]:
    """(spec, plan, signature, body, [(call, expected)]) of one random function from one of `families`."""
    k = rng.randint(2, 9)
    kind = rng.choice(families)
    if kind >= 14:
        return _held_out(rng, kind, k)
    if kind == 0:
        xs = [rng.randint(-20, 50) for _ in range(3)]
        return f"returns x plus {k}", f"add {k} to x", "(x)", f"return x + {k}", [(f"({x})", x + k) for x in xs]
    if kind == 1:
        xs = [rng.randint(-9, 30) for _ in range(3)]
        return f"returns x multiplied by {k}", f"multiply x by {k}", "(x)", f"return x * {k}", [(f"({x})", x * k) for x in xs]
    if kind == 2:
        words = rng.sample(_WORDS, 3)
        return (
            f"returns the string s repeated {k} times",
            f"repeat s {k} times with *",
            "(s)",
            f"return s * {k}",
            [(f"({w!r})", w * k) for w in words],
        )
    if kind == 3:
        words = rng.sample(_WORDS, 3)
        return "returns the string s reversed", "slice s backwards", "(s)", "return s[::-1]", [(f"({w!r})", w[::-1]) for w in words]
    if kind == 4:
        letter = rng.choice("aeiou")
        words = rng.sample(_WORDS, 2) + [f"{letter}x{letter}"]  # one that has the letter: `return 0` must fail
        return (
            f"returns how many times the letter {letter!r} occurs in the string s",
            f"count {letter!r} in s",
            "(s)",
            f"return s.count({letter!r})",
            [(f"({w!r})", w.count(letter)) for w in words],
        )
    lists = [[rng.randint(-10, 40) for _ in range(rng.randint(1, 6))] for _ in range(3)]
    if kind == 5:
        return (
            "returns the sum of the even numbers in the list xs",
            "sum the items of xs that are divisible by 2",
            "(xs)",
            "return sum(x for x in xs if x % 2 == 0)",
            [(f"({xs})", sum(x for x in xs if x % 2 == 0)) for xs in lists],
        )
    if kind == 6:
        return (
            "returns the largest number in the non-empty list xs",
            "use max",
            "(xs)",
            "return max(xs)",
            [(f"({xs})", max(xs)) for xs in lists],
        )
    if kind == 8:
        return (
            f"returns the numbers in the list xs that are greater than {k}, sorted from largest to smallest",
            f"filter xs by > {k}, then sort in reverse",
            "(xs)",
            f"return sorted((x for x in xs if x > {k}), reverse=True)",
            [(f"({xs})", sorted((x for x in xs if x > k), reverse=True)) for xs in lists],
        )
    if kind == 9:
        return (
            "returns the sum of the squares of the odd numbers in the list xs",
            "square the odd items of xs and sum them",
            "(xs)",
            "return sum(x * x for x in xs if x % 2 != 0)",
            [(f"({xs})", sum(x * x for x in xs if x % 2 != 0)) for xs in lists],
        )
    if kind == 10:
        return (
            "returns the list of running totals of the list xs (item i is the sum of xs[0] to xs[i])",
            "keep a total, append it after adding each item",
            "(xs)",
            "out, total = [], 0\n    for x in xs:\n        total += x\n        out.append(total)\n    return out",
            [(f"({xs})", [sum(xs[: i + 1]) for i in range(len(xs))]) for xs in lists],
        )
    if kind == 11:
        lo, hi = sorted(rng.sample(range(-10, 30), 2))
        xs = [rng.randint(-20, 40) for _ in range(3)] + [lo - 1, hi + 1]
        return (
            f"returns x limited to the range {lo} to {hi} (values below {lo} become {lo}, above {hi} become {hi})",
            f"max with {lo}, then min with {hi}",
            "(x)",
            f"return min(max(x, {lo}), {hi})",
            [(f"({x})", min(max(x, lo), hi)) for x in xs],
        )
    if kind == 12:
        ns = [rng.randint(0, 99999) for _ in range(3)]
        return (
            "returns the sum of the decimal digits of the non-negative integer n",
            "turn n into a string and add up its digits",
            "(n)",
            "return sum(int(d) for d in str(n))",
            [(f"({n})", sum(int(d) for d in str(n))) for n in ns],
        )
    if kind == 13:
        a, b = rng.sample("aeiou", 2)
        words = rng.sample(_WORDS, 3)
        return (
            f"returns the string s in upper case with every {a!r} replaced by {b!r} first",
            f"replace {a!r} with {b!r}, then upper()",
            "(s)",
            f"return s.replace({a!r}, {b!r}).upper()",
            [(f"({w!r})", w.replace(a, b).upper()) for w in words],
        )
    ns = [rng.randint(0, 60) for _ in range(3)]
    return (
        f"returns True if n is divisible by {k}, else False",
        f"check n % {k} == 0",
        "(n)",
        f"return n % {k} == 0",
        [(f"({n})", n % k == 0) for n in ns],
    )


def _held_out(rng: random.Random, kind: int, k: int) -> tuple[str, str, str, str, list[tuple[str, object]]]:
    lists = [[rng.randint(-10, 40) for _ in range(rng.randint(2, 7))] for _ in range(3)]
    if kind == 20:
        return (
            "returns the smallest number in the non-empty list xs",
            "use min",
            "(xs)",
            "return min(xs)",
            [(f"({xs})", min(xs)) for xs in lists],
        )
    if kind == 21:
        xs = [rng.randint(-20, 50) for _ in range(3)]
        return f"returns x minus {k}", f"subtract {k} from x", "(x)", f"return x - {k}", [(f"({x})", x - k) for x in xs]
    if kind == 22:
        return "returns how many items the list xs has", "use len", "(xs)", "return len(xs)", [(f"({xs})", len(xs)) for xs in lists]
    if kind == 23:
        words = [w.capitalize() for w in rng.sample(_WORDS, 2)] + ["MiXeD"]
        return "returns the string s in lower case", "use lower()", "(s)", "return s.lower()", [(f"({w!r})", w.lower()) for w in words]
    if kind == 14:
        lists = [xs + [xs[0]] for xs in lists]  # a repeat in every case: `return xs` must fail
        return (
            "returns the list xs without repeated items, keeping the first occurrence of each in order",
            "walk xs, keep an item the first time it is seen",
            "(xs)",
            "seen, out = set(), []\n    for x in xs:\n        if x not in seen:\n            seen.add(x)\n            out.append(x)\n"
            "    return out",
            [(f"({xs})", list(dict.fromkeys(xs))) for xs in lists],
        )
    if kind == 15:
        sentences = [" ".join(rng.choice(_WORDS)[: rng.randint(2, 6)] for _ in range(rng.randint(3, 6))) for _ in range(3)]
        return (
            f"returns how many words of the string s (separated by spaces) are longer than {k // 2} letters",
            f"split s, count the words with len > {k // 2}",
            "(s)",
            f"return sum(1 for w in s.split() if len(w) > {k // 2})",
            [(f"({t!r})", sum(1 for w in t.split() if len(w) > k // 2)) for t in sentences],
        )
    if kind == 16:
        words = [rng.choice(_WORDS), "Level", "abca"]
        return (
            "returns True if the string s reads the same backwards, ignoring case, else False",
            "lower-case s and compare it with its reverse",
            "(s)",
            "t = s.lower()\n    return t == t[::-1]",
            [(f"({w!r})", w.lower() == w.lower()[::-1]) for w in words],
        )
    if kind == 17:
        cases = [xs[:2] + [-rng.randint(1, 9)] + xs[2:] for xs in lists[:2]] + [[abs(x) for x in lists[2]]]
        return (
            "returns the index of the first negative number in the list xs, or -1 if there is none",
            "enumerate xs and return the first index whose item is below 0",
            "(xs)",
            "for i, x in enumerate(xs):\n        if x < 0:\n            return i\n    return -1",
            [(f"({xs})", next((i for i, x in enumerate(xs) if x < 0), -1)) for xs in cases],
        )
    if kind == 18:
        r = k % 3 + 1
        return (
            f"returns the list xs rotated left by {r} places (the first {r} items move to the end)",
            f"slice xs at {r} mod its length and swap the halves",
            "(xs)",
            f"r = {r} % len(xs)\n    return xs[r:] + xs[:r]",
            [(f"({xs})", xs[r % len(xs) :] + xs[: r % len(xs)]) for xs in lists],
        )
    lists = [xs + [max(xs) + 1, max(xs) + 1] for xs in lists]  # the largest repeated: the second largest is distinct
    return (
        "returns the second largest distinct number in the list xs",
        "take the distinct values, sort them, return the one before the last",
        "(xs)",
        "return sorted(set(xs))[-2]",
        [(f"({xs})", sorted(set(xs))[-2]) for xs in lists],
    )


def generate(n: int, seed: int = 0, families: tuple[int, ...] = TRAIN) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        spec, plan, signature, body, cases = _family(rng, families)
        name = f"{rng.choice(_WORDS)}_{rng.choice(['value', 'calc', 'fn', 'op'])}_{i}"
        rows.append(
            {
                "id": f"pf-{seed}-{i:05d}",
                "prompt": f"Write a Python function `{name}{signature}` that {spec}.",
                "tests": "\n".join(f"assert {name}{call} == {expected!r}" for call, expected in cases),
                "entry_point": name,
                "plan": plan,
                "solution": f"def {name}{signature}:\n    {body}",
            }
        )
    return rows
