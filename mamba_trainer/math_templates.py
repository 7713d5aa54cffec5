"""The problem templates behind ``mamba_trainer.mathgen``: wording, worked steps and a closed-form answer each.

Every template makes ``(values, question, solution lines, answer)`` from a ``random.Random``; ``solve(values)``
recomputes the answer without the wording, so tests can check the two agree.
"""

from __future__ import annotations

import ast
import operator
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

PEOPLE = [(n, "she", "her", "her") for n in (
    "Ava", "Mia", "Lena", "Sofia", "Priya", "Chloe", "Hana", "Maria", "Zoe", "Emma", "Aisha", "Grace",
    "Nora", "Ruby", "Yuki", "Fatima", "Olivia", "Lucia", "Ines", "Tara")] + [(n, "he", "him", "his") for n in (
    "Ben", "Leo", "Omar", "Jack", "Noah", "Ravi", "Mateo", "Sam", "Kenji", "Lucas", "Ethan", "Diego",
    "Hugo", "Amir", "Tom", "Felix", "Jamal", "Ivan", "Owen", "Marco")]
# (plural, lowest price, highest price) in whole dollars.
GOODS = [("pencils", 1, 3), ("notebooks", 2, 6), ("apples", 1, 2), ("books", 5, 15), ("toy cars", 3, 9),
         ("cupcakes", 2, 4), ("stickers", 1, 2), ("t-shirts", 8, 20), ("mugs", 4, 10), ("plants", 5, 12),
         ("candles", 3, 8), ("comic books", 2, 7), ("bracelets", 2, 9), ("water bottles", 4, 11)]
THINGS = ["marbles", "stamps", "seashells", "cards", "stickers", "coins", "beads", "buttons", "crayons"]
# (who, makes what, per what)
MAKERS = [("A bakery", "loaves of bread", "hour"), ("A machine", "bottles", "minute"),
          ("A printer", "pages", "minute"), ("A farm", "eggs", "day"), ("A factory", "toys", "hour"),
          ("A beekeeper", "jars of honey", "week"), ("A tailor", "shirts", "day")]
FRIENDS = ["a friend", "a neighbor", "a classmate", "a cousin", "a teammate"]
CONTAINERS = ["boxes", "bags", "jars", "baskets"]

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expr: str) -> Fraction:
    """Exact value of an annotation such as ``"80*25/100"`` (integers, + - * /, parentheses)."""

    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"unsupported calculator expression: {expr!r}")

    return ev(ast.parse(expr, mode="eval").body)


class _Retry(Exception):
    """The sampled numbers break a template's constraint (not whole, too big); draw again."""


def _calc(expr: str, money: bool = False) -> tuple[str, int]:
    """``"12*3"`` -> (``"12 * 3 = <<12*3=36>>36"``, 36); rejects non-integer or negative results.

    Evaluates left to right in integers (4x faster than ``evaluate``, which the tests use to check it);
    the templates only write expressions where that equals the usual precedence.
    """
    nums, ops = [int(x) for x in re.findall(r"\d+", expr)], re.findall(r"[-+*/]", expr)
    assert len(ops) < 2 or {ops[0], ops[1]} <= {"+", "-"} or {ops[0], ops[1]} <= {"*", "/"}, expr
    value = nums[0]
    for op, n in zip(ops, nums[1:]):
        if op == "/" and value % n:
            raise _Retry
        value = value + n if op == "+" else value - n if op == "-" else value * n if op == "*" else value // n
    if value < 0:
        raise _Retry
    shown = expr.replace("*", " * ").replace("/", " / ").replace("+", " + ").replace("-", " - ")
    return f"{shown} = {'$' if money else ''}<<{expr}={value}>>{value}", value


@dataclass(frozen=True)
class Template:
    name: str
    family: str
    steps: int
    make: Callable[[random.Random], tuple[dict, str, list[str], int]]  # values, question, lines, answer
    solve: Callable[[dict], int]  # closed form from ``values`` alone, independent of ``make``'s wording

    def draw(self, r: random.Random) -> tuple[dict, str, list[str], int]:
        """``make(r)``, drawn again until the sampled numbers fit the template's constraints."""
        while True:
            try:
                return self.make(r)
            except _Retry:
                continue


TEMPLATES: list[Template] = []


def _template(family: str, steps: int, solve: Callable[[dict], int], name: str | None = None):
    def register(make):
        TEMPLATES.append(Template(name or make.__name__.lstrip("_"), family, steps, make, solve))
        return make
    return register


def _person(r):
    return r.choice(PEOPLE)


def _good(r):
    item, lo, hi = r.choice(GOODS)
    return item, r.randint(lo, hi)


def _bill(total):
    for bill in (10, 20, 50, 100):
        if bill > total:
            return bill
    raise _Retry


# ---- shopping -------------------------------------------------------------------------------------
@_template("shopping", 1, solve=lambda v: v["n"] * v["price"])
def _shop_total(r):
    (name, he, _, _), (item, price), n = _person(r), _good(r), r.randint(2, 9)
    q = r.choice([f"{name} buys {n} {item} that cost ${price} each. How much does {he} spend?",
                  f"{item.capitalize()} cost ${price} each. How much do {n} {item} cost in dollars?",
                  f"{name} wants {n} {item}. Each one costs ${price}. How many dollars does {he} need?"])
    line, total = _calc(f"{n}*{price}", money=True)
    return dict(n=n, price=price), q, [f"The {item} cost {line}."], total


@_template("shopping", 2, solve=lambda v: v["bill"] - v["n"] * v["price"])
def _shop_change(r):
    (name, he, _, _), (item, price), n = _person(r), _good(r), r.randint(2, 8)
    bill = _bill(n * price)
    q = (f"{name} buys {n} {item} at ${price} each and pays with a ${bill} bill. "
         f"How much change does {he} get?")
    l1, total = _calc(f"{n}*{price}", money=True)
    l2, change = _calc(f"{bill}-{total}", money=True)
    return dict(n=n, price=price, bill=bill), q, [f"The {item} cost {l1}.", f"{name} gets {l2} in change."], change


def _basket(r):
    """Two different goods bought together: the first three steps shared by the bigger shopping problems."""
    (i1, p1), (i2, p2), n1, n2 = _good(r), _good(r), r.randint(2, 6), r.randint(2, 6)
    if i1 == i2:
        raise _Retry
    (l1, a), (l2, b) = _calc(f"{n1}*{p1}", money=True), _calc(f"{n2}*{p2}", money=True)
    l3, total = _calc(f"{a}+{b}", money=True)
    return (dict(n1=n1, p1=p1, n2=n2, p2=p2), f"buys {n1} {i1} at ${p1} each and {n2} {i2} at ${p2} each.",
            [f"The {i1} cost {l1}.", f"The {i2} cost {l2}.", f"Altogether that is {l3}."], total)


@_template("shopping", 3, solve=lambda v: v["n1"] * v["p1"] + v["n2"] * v["p2"])
def _shop_two(r):
    (name, he, _, _), (values, bought, lines, total) = _person(r), _basket(r)
    ask = r.choice([f"How much does {he} spend in all?", "What is the total cost?", f"How many dollars does {he} spend?"])
    return values, f"{name} {bought} {ask}", lines, total


@_template("shopping", 4, solve=lambda v: v["bill"] - v["n1"] * v["p1"] - v["n2"] * v["p2"])
def _shop_two_change(r):
    (name, he, _, _), (values, bought, lines, total) = _person(r), _basket(r)
    bill = _bill(total)
    q = f"{name} {bought} {he.capitalize()} pays with a ${bill} bill. How much change does {he} receive?"
    line, change = _calc(f"{bill}-{total}", money=True)
    return {**values, "bill": bill}, q, lines + [f"The change is {line}."], change


@_template("shopping", 5, solve=lambda v: (v["n1"] * v["p1"] + v["n2"] * v["p2"]) * (100 - v["pct"]) // 100)
def _shop_two_discount(r):
    (name, he, _, _), (values, bought, lines, total) = _person(r), _basket(r)
    pct = r.choice([10, 20, 25, 50])
    q = f"{name} {bought} The store takes {pct}% off the total. How much does {he} pay?"
    l4, off = _calc(f"{total}*{pct}/100", money=True)
    l5, pay = _calc(f"{total}-{off}", money=True)
    return {**values, "pct": pct}, q, lines + [f"The discount is {l4}.", f"{name} pays {l5}."], pay


# ---- rates x time ---------------------------------------------------------------------------------
@_template("rates", 1, solve=lambda v: v["rate"] * v["t"])
def _rate_simple(r):
    who, what, unit = r.choice(MAKERS)
    rate, t = r.randint(2, 30), r.randint(2, 12)
    q = r.choice([f"{who} makes {rate} {what} every {unit}. How many {what} does it make in {t} {unit}s?",
                  f"In one {unit}, {who.lower()} makes {rate} {what}. How many {what} are made in {t} {unit}s?"])
    line, total = _calc(f"{rate}*{t}")
    return dict(rate=rate, t=t), q, [f"It makes {line} {what}."], total


@_template("rates", 2, solve=lambda v: v["pages"] - v["rate"] * v["days"])
def _rate_left(r):
    name, he, _, _ = _person(r)
    rate, days = r.randint(5, 30), r.randint(2, 7)
    pages = rate * days + r.randint(5, 80)
    q = (f"{name} is reading a {pages}-page book. {he.capitalize()} reads {rate} pages every day. "
         f"How many pages are left after {days} days?")
    l1, read = _calc(f"{rate}*{days}")
    l2, left = _calc(f"{pages}-{read}")
    return dict(pages=pages, rate=rate, days=days), q, [f"{name} reads {l1} pages.", f"There are {l2} pages left."], left


@_template("rates", 2, solve=lambda v: v["speed"] * (v["t1"] + v["t2"]))
def _rate_two_days(r):
    name, he, _, _ = _person(r)
    verb, unit = r.choice([("walks", "miles"), ("cycles", "miles"), ("runs", "kilometers"), ("swims", "laps")])
    speed, t1, t2 = r.randint(2, 12), r.randint(1, 5), r.randint(1, 5)
    q = (f"{name} {verb} {speed} {unit} per hour. {he.capitalize()} goes for {t1} hours on Saturday and "
         f"{t2} hours on Sunday. How many {unit} does {he} cover over the weekend?")
    l1, hours = _calc(f"{t1}+{t2}")
    l2, dist = _calc(f"{speed}*{hours}")
    return dict(speed=speed, t1=t1, t2=t2), q, [f"{he.capitalize()} is out for {l1} hours.", f"That is {l2} {unit}."], dist


@_template("rates", 3, solve=lambda v: v["wage"] * v["hours"] * v["days"] + v["bonus"])
def _rate_wage(r):
    name, he, _, _ = _person(r)
    wage, hours, days, bonus = r.randint(8, 20), r.randint(2, 8), r.randint(2, 6), r.randint(1, 6) * 5
    job = r.choice(["at a cafe", "at the library", "as a tutor", "at a garden center", "at a bike shop"])
    q = (f"{name} works {job} for ${wage} an hour. {he.capitalize()} works {hours} hours a day, {days} days a week, "
         f"and gets a ${bonus} bonus every week. How much does {he} earn in a week?")
    l1, daily = _calc(f"{wage}*{hours}", money=True)
    l2, weekly = _calc(f"{daily}*{days}", money=True)
    l3, total = _calc(f"{weekly}+{bonus}", money=True)
    return (dict(wage=wage, hours=hours, days=days, bonus=bonus), q,
            [f"Each day {he} earns {l1}.", f"For {days} days of work {he} earns {l2}.",
             f"With the bonus {he} earns {l3}."], total)


@_template("rates", 4, solve=lambda v: v["wage"] * v["hours"] * v["days"] * v["weeks"] - v["spent"])
def _rate_savings(r):
    name, he, _, _ = _person(r)
    wage, hours, days, weeks = r.randint(8, 15), r.randint(2, 5), r.randint(2, 5), r.randint(2, 4)
    spent = r.randint(1, 9) * 10
    q = (f"{name} earns ${wage} an hour and works {hours} hours a day, {days} days a week. After {weeks} weeks "
         f"{he} spends ${spent} on a gift. How much money does {he} have left?")
    l1, daily = _calc(f"{wage}*{hours}", money=True)
    l2, weekly = _calc(f"{daily}*{days}", money=True)
    l3, total = _calc(f"{weekly}*{weeks}", money=True)
    l4, left = _calc(f"{total}-{spent}", money=True)
    return (dict(wage=wage, hours=hours, days=days, weeks=weeks, spent=spent), q,
            [f"Each day {he} earns {l1}.", f"Each week {he} earns {l2}.", f"In {weeks} weeks {he} earns {l3}.",
             f"After the gift {he} has {l4} left."], left)


# ---- sharing / division ---------------------------------------------------------------------------
@_template("sharing", 1, solve=lambda v: v["total"] // v["k"])
def _share_simple(r):
    name, he, _, _ = _person(r)
    thing, k = r.choice(THINGS), r.randint(2, 9)
    total = k * r.randint(2, 15)
    q = r.choice([f"{name} has {total} {thing} and shares them equally among {k} friends. How many {thing} does each friend get?",
                  f"{total} {thing} are split evenly into {k} groups. How many {thing} are in each group?"])
    line, each = _calc(f"{total}/{k}")
    return dict(total=total, k=k), q, [f"Each gets {line} {thing}."], each


@_template("sharing", 2, solve=lambda v: (v["total"] - v["kept"]) // v["k"])
def _share_keep(r):
    name, he, _, poss = _person(r)
    thing, k = r.choice(THINGS), r.randint(2, 8)
    kept = r.randint(1, 12)
    total = k * r.randint(2, 12) + kept
    q = (f"{name} has {total} {thing}. {he.capitalize()} keeps {kept} for {'herself' if he == 'she' else 'himself'} "
         f"and shares the rest equally among {k} friends. How many {thing} does each friend get?")
    l1, rest = _calc(f"{total}-{kept}")
    l2, each = _calc(f"{rest}/{k}")
    return dict(total=total, kept=kept, k=k), q, [f"{name} shares {l1} {thing}.", f"Each friend gets {l2}."], each


@_template("sharing", 3, solve=lambda v: (v["packs"] * v["size"] - v["lost"]) // v["k"])
def _share_packs(r):
    name, he, _, _ = _person(r)
    thing, box = r.choice(THINGS), r.choice(CONTAINERS)
    packs, size, k, lost = r.randint(2, 8), r.randint(5, 20), r.randint(2, 6), r.randint(1, 10)
    q = (f"{name} buys {packs} packs of {thing} with {size} in each pack. {he.capitalize()} loses {lost} of them "
         f"and puts the rest equally into {k} {box}. How many {thing} go in each of the {box}?")
    l1, total = _calc(f"{packs}*{size}")
    l2, rest = _calc(f"{total}-{lost}")
    l3, each = _calc(f"{rest}/{k}")
    return (dict(packs=packs, size=size, lost=lost, k=k), q,
            [f"{name} buys {l1} {thing}.", f"After losing {lost}, {l2} are left.", f"Each of the {box} gets {l3}."], each)


# ---- percentages of round numbers -----------------------------------------------------------------
@_template("percent", 1, solve=lambda v: v["n"] * v["pct"] // 100)
def _pct_of(r):
    n, pct = r.randint(2, 20) * 10, r.choice([10, 20, 25, 30, 40, 50, 60, 75])
    group, trait = r.choice([("students in a class", "wear glasses"), ("people at a party", "are children"),
                             ("trees in an orchard", "are apple trees"), ("cars in a parking lot", "are red")])
    q = f"There are {n} {group}. {pct}% of them {trait}. How many of them {trait}?"
    line, part = _calc(f"{n}*{pct}/100")
    return dict(n=n, pct=pct), q, [f"{pct}% of {n} is {line}."], part


@_template("percent", 2, solve=lambda v: v["price"] - v["price"] * v["pct"] // 100)
def _pct_sale(r):
    item = r.choice(["jacket", "bike", "lamp", "backpack", "pair of shoes", "video game", "chair"])
    price, pct = r.randint(2, 30) * 10, r.choice([10, 20, 25, 50])
    q = r.choice([f"A {item} costs ${price}. It is on sale for {pct}% off. What is the sale price?",
                  f"The price of a {item} is ${price}. How much does it cost after a {pct}% discount?"])
    l1, off = _calc(f"{price}*{pct}/100", money=True)
    l2, sale = _calc(f"{price}-{off}", money=True)
    return dict(price=price, pct=pct), q, [f"The discount is {l1}.", f"The sale price is {l2}."], sale


@_template("percent", 3, solve=lambda v: v["n"] * (v["price"] - v["price"] * v["pct"] // 100))
def _pct_sale_many(r):
    name, he, _, _ = _person(r)
    item = r.choice(["shirts", "lamps", "board games", "plates", "towels", "scarves"])
    price, pct, n = r.randint(2, 10) * 10, r.choice([10, 20, 25, 50]), r.randint(2, 6)
    q = f"{item.capitalize()} usually cost ${price} each. This week they are {pct}% off. How much does {name} pay for {n} {item}?"
    l1, off = _calc(f"{price}*{pct}/100", money=True)
    l2, sale = _calc(f"{price}-{off}", money=True)
    l3, total = _calc(f"{n}*{sale}", money=True)
    return (dict(price=price, pct=pct, n=n), q,
            [f"Each one is {l1} cheaper.", f"Each one costs {l2}.", f"{name} pays {l3}."], total)


# ---- ages -----------------------------------------------------------------------------------------
@_template("ages", 1, solve=lambda v: v["age"] * v["m"])
def _age_times(r):
    (a, _, _, _), (b, _, _, _) = r.sample(PEOPLE, 2)
    age, m = r.randint(2, 15), r.randint(2, 4)
    times = {2: "twice", 3: "three times", 4: "four times"}[m]
    q = f"{a} is {age} years old. {b} is {times} as old as {a}. How old is {b}?"
    line, older = _calc(f"{age}*{m}")
    return dict(age=age, m=m), q, [f"{b} is {line} years old."], older


@_template("ages", 2, solve=lambda v: v["age"] * v["m"] + v["later"])
def _age_future(r):
    (a, _, _, _), (b, _, _, _) = r.sample(PEOPLE, 2)
    age, m, later = r.randint(2, 12), r.randint(2, 4), r.randint(2, 10)
    times = {2: "twice", 3: "three times", 4: "four times"}[m]
    q = f"{b} is {times} as old as {a}. {a} is {age} years old. How old will {b} be in {later} years?"
    l1, now = _calc(f"{age}*{m}")
    l2, then = _calc(f"{now}+{later}")
    return dict(age=age, m=m, later=later), q, [f"{b} is {l1} years old now.", f"In {later} years {b} will be {l2}."], then


@_template("ages", 3, solve=lambda v: v["age"] + (v["age"] + v["gap"]) + 2 * (v["age"] + v["gap"]))
def _age_sum(r):
    (a, _, _, _), (b, _, _, _), (c, _, _, _) = r.sample(PEOPLE, 3)
    age, gap = r.randint(2, 15), r.randint(1, 8)
    q = f"{a} is {age} years old. {b} is {gap} years older than {a}, and {c} is twice as old as {b}. What is the sum of their ages?"
    l1, bage = _calc(f"{age}+{gap}")
    l2, cage = _calc(f"2*{bage}")
    l3, total = _calc(f"{age}+{bage}+{cage}")
    return dict(age=age, gap=gap), q, [f"{b} is {l1} years old.", f"{c} is {l2} years old.", f"Together they are {l3} years old."], total


# ---- multi-step combos ----------------------------------------------------------------------------
_CHAIN = {"add": lambda x, n: x + n, "sub": lambda x, n: x - n, "mul": lambda x, n: x * n, "div": lambda x, n: x // n}


def _solve_chain(v):
    x = v["start"]
    for op, n in v["ops"]:
        x = _CHAIN[op](x, n)
    return x


def _chain(r, n_ops):
    name, he, him, poss = _person(r)
    thing = r.choice(THINGS)
    cur = r.randint(10, 60)
    start, ops, sentences, lines = cur, [], [], []
    for i in range(n_ops):
        last = i == n_ops - 1
        kind = r.choice(["add", "sub", "mul", "half"] + (["share"] if last else []))
        if kind == "add":
            n = r.randint(3, 40)
            sentences.append(r.choice([f"{he.capitalize()} buys {n} more.", f"{r.choice(FRIENDS).capitalize()} gives {him} {n} more."]))
            line, cur = _calc(f"{cur}+{n}")
            lines.append(f"After getting {n} more, {name} has {line} {thing}.")
        elif kind == "sub":
            n = r.randint(2, max(2, cur - 1))
            sentences.append(f"{he.capitalize()} gives {n} to {r.choice(FRIENDS)}.")
            line, cur = _calc(f"{cur}-{n}")
            lines.append(f"After giving {n} away, {name} has {line} {thing}.")
        elif kind == "mul":
            n = r.choice([2, 3])
            sentences.append(f"Then {he} {'doubles' if n == 2 else 'triples'} {poss} collection.")
            line, cur = _calc(f"{cur}*{n}")
            lines.append(f"After that {name} has {line} {thing}.")
        elif kind == "half":
            n = 2
            sentences.append(f"{he.capitalize()} gives half of {poss} {thing} to {poss} sister.")
            line, cur = _calc(f"{cur}/2")
            lines.append(f"Half of them leaves {line} {thing}.")
        else:
            n, box = r.randint(2, 6), r.choice(CONTAINERS)
            sentences.append(f"Finally {he} puts all of them equally into {n} {box}.")
            line, cur = _calc(f"{cur}/{n}")
            lines.append(f"Each of the {box} holds {line} {thing}.")
        ops.append(("div" if kind in ("half", "share") else kind, n))
        if cur > 1000 or cur < 1:
            raise _Retry
    ask = f"How many {thing} are in each one?" if kind == "share" else f"How many {thing} does {name} have now?"
    q = f"{name} has {start} {thing}. " + " ".join(sentences) + " " + ask
    return dict(start=start, ops=[list(o) for o in ops]), q, lines, cur


for _n in (2, 3, 4):
    _template("multi", _n, solve=_solve_chain, name=f"chain{_n}")(lambda r, _n=_n: _chain(r, _n))


TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}
