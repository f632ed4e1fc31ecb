"""The fixed text the tiny model's tokenizer is trained on (`models.build_tiny_model`): prose,
arithmetic, facts, chat-shaped answers and invented trivia. Changing any of it changes the built
model, so it lives apart from the code that builds it."""

from __future__ import annotations

import random

from proactive_rl.engine.models import IM_END, IM_START

# Hand-written prose so the BPE learns ordinary English words; the templated sentences below add
# numbers, facts and the pipeline's own phrasing. Changing any of this changes the built model.
_PROSE = """\
The quick brown fox jumps over the lazy dog. A small river runs through the green valley.
People often ask simple questions, and a good assistant answers them clearly and honestly.
When the answer is not known, it is better to say so than to guess a wrong number or name.
I don't know the exact year. I am not sure about the precise figure. Please check a reliable source.
I do not have reliable information about this small village, its library, or its history.
The records for that town are not something I can recall with confidence.
This is a specific historical question about a place that is not widely documented.
Let me think step by step. First, add the ones. Then carry the ten. The result is the sum.
To multiply two numbers, add one of them to itself as many times as the other says.
Subtraction takes one number away from another; the difference can be small or large.
Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.
There are seven days in a week, twelve months in a year, and twenty four hours in a day.
A kilometre is one thousand metres. A metre is one hundred centimetres. A kilogram has grams.
Colours of the rainbow are red, orange, yellow, green, blue, indigo and violet.
The sky is blue on a clear day, grass is green, snow is white and coal is black.
Cats, dogs, horses, cows, sheep, goats, rabbits and mice are common animals.
Birds such as eagles, owls, sparrows and penguins have feathers; only some of them can fly.
Whales and dolphins live in the ocean but breathe air, because they are mammals.
A spider has eight legs, an insect has six legs, and a snake has no legs at all.
The Earth orbits the Sun, and the Moon orbits the Earth about once every month.
Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune are the planets.
Teachers, doctors, farmers, engineers, writers and musicians work in many different places.
The library opened its doors in the morning, and the museum closed early in the evening.
Historians study old letters, maps, newspapers and photographs to learn about the past.
A question about an obscure person, a tiny town or an exact date may have no known answer.
Good answers are short and plain. Long answers that list many guesses are not helpful.
Which, what, when, where, who, why and how begin most questions in English.
Science, mathematics, geography, history, music, art and language are school subjects.
The train left the station at noon and arrived in the city before the sun went down.
Bread, cheese, apples, bananas, oranges, rice, potatoes and carrots are kinds of food.
Winter is cold, summer is warm, spring brings flowers and autumn brings falling leaves.
Mountains are high, oceans are deep, deserts are dry and forests are full of trees.
"""

# "Country Capital" per line; the country is one word, so the first space splits them.
_FACTS = [
    tuple(line.split(" ", 1))
    for line in """\
France Paris
Germany Berlin
Italy Rome
Spain Madrid
Japan Tokyo
China Beijing
Egypt Cairo
Canada Ottawa
Russia Moscow
Greece Athens
Norway Oslo
Sweden Stockholm
Portugal Lisbon
Poland Warsaw
Kenya Nairobi
Peru Lima
Australia Canberra
India New Delhi
Mexico Mexico City
Brazil Brasilia
Argentina Buenos Aires
Ireland Dublin""".splitlines()
]
# Syllables for invented people and places: the obscure questions are about exactly such names,
# and their many distinct spellings give the BPE enough material to fill its vocabulary.
_ONSETS = "b br d dr f g gr h k kr l m n p r s st t th tr v w z".split()
_VOWELS = "a e i o u ae ei ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "k", "m", "rn", "ld", "nd", "sk", "th"]
_SUFFIXES = "dale ford vik wick holm stow by mark port burg ton field".split()
_TOWNS = "Vellmarsk Orrindale Quastow Brenhollow Tirsvik Maelford Duskerby Ilvenport".split()
_THINGS = "library bridge school bakery newspaper museum lighthouse railway station".split()


def corpus(rng: random.Random) -> list[str]:
    """The fixed tokenizer training text: prose, arithmetic, facts and chat-shaped answers."""
    lines = _PROSE.splitlines()
    for _ in range(400):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice("+-*")
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        lines.append(f"What is {a} {op} {b}? {a} {op} {b} = {value}. The answer is {value}.")
    for country, capital in _FACTS:
        lines.append(f"What is the capital of {country}? The capital of {country} is {capital}.")
        lines.append(f"{capital} is a large city in {country}, and many people visit {country}.")
    # Chat-shaped text, so role names and the turn layout get whole tokens.
    for role, text in [("system", "You are a helpful proactive assistant."), ("user", "Hello!")]:
        for _ in range(20):
            lines.append(f"{IM_START}{role}\n{text}{IM_END}\n{IM_START}assistant\nHi.{IM_END}\n")
    for town in _TOWNS:
        for thing in _THINGS:
            year = rng.randint(1700, 1999)
            lines.append(f"In what year was the first public {thing} opened in {town}? {year}.")
            lines.append(
                f"<think>\nThis asks for an exact year about {town}, a small village.\n</think>"
                f"\n\n<proactive>\nI don't have reliable records about the {thing} in {town}."
                "\n</proactive>\n\nI don't know the exact year."
            )
    for _ in range(3000):
        first, family, place = _name(rng, 2), _name(rng, 3), _name(rng, 2) + rng.choice(_SUFFIXES)
        year, count = rng.randint(1600, 2020), rng.randint(2, 9000)
        lines.append(
            rng.choice(
                [
                    f"{first} {family} was born in {place} in {year}.",
                    f"The village of {place} had {count} people in {year}.",
                    f"{first} {family} wrote about the {rng.choice(_THINGS)} of {place}.",
                ]
            )
        )
    return lines


def _name(rng: random.Random, syllables: int) -> str:
    parts = [
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    ]
    return "".join(parts).capitalize()
