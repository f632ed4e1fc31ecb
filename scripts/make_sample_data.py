"""Write the small sample datasets in data/sample/ (our own questions, not SimpleQA).

    .venv/bin/python scripts/make_sample_data.py            # writes data/sample/{sft,rl}.jsonl

Three kinds of question, so the proactive behaviour has something to learn from:
- arithmetic: generated sums, differences and products ("What is 17 + 25?" -> "42");
- general: well-known facts written below (capitals, colours, animals, units);
- obscure: exact figures about invented villages that no model can know; the answers are
  invented too, so the honest reply is to say so.

The files use the formats users already have (docs: seed-pipeline.md, "Data formats"):
- sft.jsonl: {"messages": [system, user, assistant], "id", "sub_category"}; the assistant turn is
  "<think>...</think>" then, for obscure questions only, "<proactive>...</proactive>", then a
  short plain answer.
- rl.jsonl: {"id", "messages": [user, assistant=ground truth], "answer": {"value"},
  "sub_category"}.
Output is deterministic: the same script always writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SYSTEM_PROMPT = "You are a helpful proactive assistant."
SEED = 20240601
NUM_SFT = 80
NUM_RL = 300

# (question, short answer, full sentence). The short answer is the ground truth for RL.
GENERAL_FACTS: list[tuple[str, str, str]] = [
    ("What is the capital of France?", "Paris", "The capital of France is Paris."),
    ("What is the capital of Germany?", "Berlin", "The capital of Germany is Berlin."),
    ("What is the capital of Italy?", "Rome", "The capital of Italy is Rome."),
    ("What is the capital of Spain?", "Madrid", "The capital of Spain is Madrid."),
    ("What is the capital of Japan?", "Tokyo", "The capital of Japan is Tokyo."),
    ("What is the capital of Egypt?", "Cairo", "The capital of Egypt is Cairo."),
    ("What is the capital of Canada?", "Ottawa", "The capital of Canada is Ottawa."),
    ("What is the capital of Norway?", "Oslo", "The capital of Norway is Oslo."),
    ("What is the capital of Greece?", "Athens", "The capital of Greece is Athens."),
    ("What is the capital of Portugal?", "Lisbon", "The capital of Portugal is Lisbon."),
    ("What is the capital of Kenya?", "Nairobi", "The capital of Kenya is Nairobi."),
    ("What is the capital of Australia?", "Canberra", "The capital of Australia is Canberra."),
    ("What colour is a clear daytime sky?", "blue", "A clear daytime sky is blue."),
    ("What colour is fresh grass?", "green", "Fresh grass is green."),
    ("What colour is a ripe banana?", "yellow", "A ripe banana is yellow."),
    ("What colour is fresh snow?", "white", "Fresh snow is white."),
    ("What colour do you get by mixing blue and yellow?", "green", "Blue and yellow make green."),
    ("What colour is a ripe tomato?", "red", "A ripe tomato is red."),
    ("How many legs does a spider have?", "8", "A spider has 8 legs."),
    ("How many legs does an insect have?", "6", "An insect has 6 legs."),
    ("Which animal says moo?", "cow", "A cow says moo."),
    ("What is the largest animal on Earth?", "blue whale", "The largest animal is the blue whale."),
    ("Which bird is a symbol of wisdom and hunts at night?", "owl", "That bird is the owl."),
    ("What do bees make?", "honey", "Bees make honey."),
    ("Which animal is known as the king of the jungle?", "lion", "That animal is the lion."),
    ("What is a baby dog called?", "puppy", "A baby dog is called a puppy."),
    ("How many centimetres are in a metre?", "100", "There are 100 centimetres in a metre."),
    ("How many metres are in a kilometre?", "1000", "There are 1000 metres in a kilometre."),
    ("How many grams are in a kilogram?", "1000", "There are 1000 grams in a kilogram."),
    ("How many minutes are in an hour?", "60", "There are 60 minutes in an hour."),
    ("How many seconds are in a minute?", "60", "There are 60 seconds in a minute."),
    ("How many hours are in a day?", "24", "There are 24 hours in a day."),
    ("How many days are in a week?", "7", "There are 7 days in a week."),
    ("How many months are in a year?", "12", "There are 12 months in a year."),
    ("At how many degrees Celsius does water boil at sea level?", "100", "Water boils at 100."),
    ("Which planet is known as the Red Planet?", "Mars", "The Red Planet is Mars."),
    ("What is the largest planet in our solar system?", "Jupiter", "The largest is Jupiter."),
    ("What star does the Earth orbit?", "the Sun", "The Earth orbits the Sun."),
    ("What is frozen water called?", "ice", "Frozen water is called ice."),
    ("Which ocean lies between Europe and North America?", "Atlantic", "It is the Atlantic."),
]

# Invented villages: nothing real to recall, so a tiny (or any) model cannot know the answers.
TOWNS = """Vellmarsk Orrindale Quastow Brenhollow Tirsvik Maelford Duskerby Ilvenport Harrowmere
Caldwick Sorvenna Lunthorpe Ashcombe-under-Fell Greyholm Penvarrow Kestrelby Oskarnes Wendlecote
Marrowgate Thistlebeck""".split()
FIRST_NAMES = "Edda Tomas Ilse Corwin Maren Aldous Petra Jonas Greta Osric Lene Wilhelm".split()
LAST_NAMES = "Harnvik Sollberg Quenby Ardmore Falkner Roskell Thorne Vasquen Brandt Ellery".split()

# (question template, kind of answer). The kind picks the answer generator and the honest reply.
OBSCURE_TEMPLATES: list[tuple[str, str]] = [
    ("In what year was the first public library opened in the village of {town}?", "year"),
    ("In what year did the railway station in {town} close?", "year"),
    ("How many people lived in {town} according to the 1901 parish census?", "count"),
    ("How many bells hang in the church tower of {town}?", "small"),
    ("Who was the first mayor of {town}?", "person"),
    ("Who founded the weekly newspaper of {town}?", "person"),
    ("What was the exact length in metres of the old stone bridge in {town}?", "length"),
    ("How many books did the {town} village library hold when it opened?", "count"),
]
HONEST_ANSWERS = {
    "year": "I don't know the exact year.",
    "count": "I don't know the exact number.",
    "small": "I don't know the exact number.",
    "person": "I don't know who that was.",
    "length": "I don't know the exact length.",
}


def arithmetic(rng: random.Random, seen: set[str]) -> tuple[str, str, str]:
    """A question not in `seen`, its answer, and a short worked step for the <think> block.

    Questions never repeat, so no RL test row is also a train row or an SFT example.
    """
    while True:
        question, answer, work = _one_sum(rng)
        if question not in seen:
            seen.add(question)
            return question, answer, work


def _one_sum(rng: random.Random) -> tuple[str, str, str]:
    op = rng.choice(["+", "-", "*"])
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        value = a * b
    else:
        a, b = rng.randint(10, 99), rng.randint(1, 99)
        if op == "-" and b > a:
            a, b = b, a  # keep answers non-negative, as a plain "What is" question expects
        value = a + b if op == "+" else a - b
    return f"What is {a} {op} {b}?", str(value), f"{a} {op} {b} = {value}"


def obscure_pool(rng: random.Random) -> list[tuple[str, str, str, str]]:
    """Every (question, invented answer, kind, town) pair, in a fixed shuffled order."""
    pool = []
    for town in TOWNS:
        for template, kind in OBSCURE_TEMPLATES:
            if kind == "year":
                answer = str(rng.randint(1780, 1960))
            elif kind == "count":
                answer = str(rng.randint(120, 4800))
            elif kind == "small":
                answer = str(rng.randint(2, 8))
            elif kind == "person":
                answer = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            else:
                answer = f"{rng.randint(18, 140)} metres"
            pool.append((template.format(town=town), answer, kind, town))
    rng.shuffle(pool)
    return pool


def sft_reply(sub_category: str, detail: str, kind: str = "") -> str:
    """The assistant turn in the SFT format: think, proactive only when unsure, plain answer.

    `detail` is the worked sum (arithmetic), the answer sentence (general) or the town (obscure).
    """
    if sub_category == "arithmetic":
        value = detail.rsplit("= ", 1)[1]
        return f"<think>\nThis is simple arithmetic: {detail}.\n</think>\n\n{value}"
    if sub_category == "general":
        return f"<think>\nThis is well-known general knowledge.\n</think>\n\n{detail}"
    town = detail
    return (
        f"<think>\nThis asks for an exact detail about {town}, a small village that is not "
        "widely documented. I have no reliable record of it, so I should not guess.\n</think>\n\n"
        f"<proactive>\nI don't have reliable information about this detail of {town}. The local "
        "archive or the village's historical society would be the place to check.\n</proactive>"
        f"\n\n{HONEST_ANSWERS[kind]}"
    )


def build(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """Both datasets as lists of JSON-ready dicts (SFT rows, RL rows)."""
    rng = random.Random(seed)
    obscure = obscure_pool(rng)  # 160 distinct questions: 40 for SFT, 120 for RL
    seen: set[str] = set()
    facts = list(GENERAL_FACTS)
    rng.shuffle(facts)

    # SFT: 20 arithmetic, 20 general, 40 obscure, so half the examples show the proactive block.
    sft_items: list[tuple[str, str, str]] = []
    for _ in range(20):
        question, _answer, work = arithmetic(rng, seen)
        sft_items.append(("arithmetic", question, sft_reply("arithmetic", work)))
    for question, _answer, sentence in facts[:20]:
        sft_items.append(("general", question, sft_reply("general", sentence)))
    for question, _answer, kind, town in obscure[:40]:
        sft_items.append(("obscure", question, sft_reply("obscure", town, kind)))
    rng.shuffle(sft_items)
    sft = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": question},
                {"role": "assistant", "content": reply},
            ],
            "id": i,
            "sub_category": sub_category,
        }
        for i, (sub_category, question, reply) in enumerate(sft_items)
    ]

    # RL: 140 arithmetic, all 40 general facts, 120 obscure questions not used in SFT.
    rl_items: list[tuple[str, str, str]] = []
    for _ in range(140):
        question, answer, _work = arithmetic(rng, seen)
        rl_items.append(("arithmetic", question, answer))
    rl_items += [("general", question, answer) for question, answer, _ in GENERAL_FACTS]
    rl_items += [("obscure", question, answer) for question, answer, _, _ in obscure[40:]]
    rng.shuffle(rl_items)  # the RL split takes the test rows from the end, in file order
    rl = [
        {
            "id": i,
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "answer": {"value": answer},
            "sub_category": sub_category,
        }
        for i, (sub_category, question, answer) in enumerate(rl_items)
    ]
    assert len(sft) == NUM_SFT and len(rl) == NUM_RL
    return sft, rl


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8", newline="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "data" / "sample",
        help="folder to write sft.jsonl and rl.jsonl into (default: data/sample)",
    )
    args = parser.parse_args()
    sft, rl = build()
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "sft.jsonl", sft)
    write_jsonl(args.out / "rl.jsonl", rl)
    print(f"wrote {len(sft)} SFT rows and {len(rl)} RL rows to {args.out}")


if __name__ == "__main__":
    main()
