"""The default corpus: a small fictional world, made here from a seed (no download).

Why fictional: every person, city and society is invented, so a pretrained model cannot answer
from memory; a correct answer has to come through the compressed memory vectors of the passage.

How the world is built (`build_world`):
1. Names. First names and surnames are glued from invented syllables ("Varel Oskin"). Every full
   name is unique and none contains another, so a full name picks out exactly one passage.
2. Facts. Each person draws 7 facts from small shared pools: birth year, birth city (12 invented
   cities), occupation (12 trades), organisation (10 invented societies), the year of joining it,
   an instrument, and a pet (kind and invented name). The pools are shared, so many people have
   the same city, trade or society: passages look alike, and only the name, or a description by
   several facts at once, tells them apart.
3. Passages. Five sentences (birth, occupation, membership, instrument, pet), each from one of 3
   templates; the intro sentence (birth or occupation) names the person in full, the other four
   come in a shuffled order and mostly use the surname. About 50-75 words, asserted 45-90.
   The paraphrase of a passage states the same facts with other templates and another order.
4. Split. The first `n_train` people are "train", the other `n_heldout` are held out, and the
   held-out people split in order into two parts: the first half "dev" (development: for choosing
   recipes; the `*_heldout.jsonl` files) and the second half "test" (the `*_test.jsonl` files, for
   the figures a reader is given, never for choosing). Rows of one part use only that part's
   passages, as gold and as distractors, so no passage, question or distractor of one part is in
   another. The train people and their random draws do not depend on the held-out split, so the
   training files are the same bytes as before the test part existed.

Rows, with the official CLaRa JSONL field names (docs/design.md section 5):
- `pretrain_rows`: 3 rows per passage, in passage order: simple QA (one question per fact),
  complex QA (each question needs two facts of the passage), paraphrase. These name the person:
  stage 1 is about reading one passage, not about finding it.
- `instruct_rows` / `e2e_rows`: one row per (passage, fact asked), shuffled; a single-fact question,
  a short answer, and k (or N) candidates with the gold at a random position (`pos_index`).
  Two kinds of question (`questions=`, and the field `question_kind` of each row):
  * "description" (the default): the person is picked out by 2 or 3 of their other facts, never
    the name: "What was the name of the cat of the maker of clocks born in Zelfort?". Wordings
    vary, and some use other words than the passage ("maker of clocks" for clockmaker, "cellist"
    for cello player, "a native of Zelfort", "who came into the world in 1874"). Each description
    fits exactly one person of the whole world (all three parts), so also exactly one of the
    part and of the candidates, and no question repeats across train, dev and test; only in a world
    too small for that does it fall back to unique in the split, then to unique among the
    candidates (tests check the first on the default corpus). The distractors
    share as many described facts as possible but never all: same trade, or city, or year...
    So the ranking has to be learnt: BM25 no longer ranks the gold first every time
    (`python corpus.py --out DIR --report` prints its MRR on the dev and test rows: about 90-96 of
    100 over 20 candidates, since a part of 40 people holds fewer people who share part of a
    description than the 320 of train).
  * "name": the person is named in full and the distractors are the most similar people (same
    city, trade or society): the name alone finds the passage, BM25 MRR is 100.
  `described_by` lists the facts the question uses (["name"] for name questions), so a reader
  or a test can check which candidates fit.

Example:
    >>> world = build_world(seed=0, n_train=8, n_heldout=6)
    >>> [len(world.entities(split)) for split in SPLITS]
    [8, 3, 3]
    >>> len(pretrain_rows(world)), len(e2e_rows(world, n_candidates=5))
    (24, 56)
    >>> row = e2e_rows(world, "test", n_candidates=3)[0]
    >>> row["question"]
    'In what year did the person born in 1948 join the Velden Company?'
    >>> row["described_by"], row["answer"]
    (['birth_year', 'organisation'], '1989')
"""
import argparse
import itertools
import json
import operator
import os
import random
import re
from collections import Counter
from dataclasses import dataclass

# ---------------------------------------------------------------- shared pools of the world
FIRST_START = ["va", "ko", "te", "mi", "dra", "se", "o", "bri", "ha", "lu", "ze", "pe", "ru", "ta", "ny", "go"]
FIRST_END = ["rel", "vin", "ssa", "lon", "mir", "dek", "na", "ris", "wen", "tis", "bo", "quin"]
SUR_START = ["os", "bel", "dar", "fen", "grav", "hol", "ist", "kel", "mor", "nev", "prat", "stov", "tur", "ul", "wyn"]
SUR_MID = ["", "a", "e", "o", "ri", "and"]
SUR_END = ["kin", "vell", "mar", "dross", "ten", "ric", "sk", "wold", "ham", "berg"]
PET_NAMES = ["Pim", "Tolly", "Bex", "Fidge", "Murro", "Kask", "Zuzu", "Lobb", "Quince", "Nib", "Dunnet", "Wisp"]
CITIES = ["Tessary", "Brumholt", "Ossendre", "Kaldermere", "Vintrell", "Saravost",
          "Dorrowick", "Elmsgrave", "Pellinor", "Quastra", "Hurnaby", "Zelfort"]
ORGANISATIONS = ["Holmvar Guild", "Order of Saint Tarrow", "Brennick Society", "Ostral Academy",
                 "Velden Company", "Circle of Marrow Lane", "Corvane Institute",
                 "Fellowship of Ashmeer", "Quorin Trust", "Lantern Club of Dessa"]
OCCUPATIONS = ["luthier", "cartographer", "glassblower", "beekeeper", "astronomer", "clockmaker",
               "weaver", "ferry pilot", "archivist", "botanist", "bookbinder", "stonemason"]
INSTRUMENTS = ["cello", "oboe", "harp", "lute", "accordion", "bassoon", "zither", "flute",
               "viola", "dulcimer", "banjo", "harmonium"]
PET_KINDS = ["cat", "dog", "parrot", "tortoise", "goat", "ferret", "owl", "pony"]

# ---------------------------------------------------------------- templates
# Sentences of a passage: 3 wordings each with the same content, so a paraphrase adds nothing.
SENTENCES = {
    "birth": ["{ref} was born in the city of {birth_city} in the year {birth_year}.",
              "In the year {birth_year}, {ref} was born in the city of {birth_city}.",
              "The city of {birth_city} is where {ref} was born, back in {birth_year}."],
    "occupation": ["By trade, {ref} was {a_occupation} for many years.",
                   "For many years, {ref} earned a living as {a_occupation}.",
                   "{ref} worked as {a_occupation} for a long span of years."],
    "membership": ["In {join_year}, {ref} joined the {organisation} as a member.",
                   "{ref} became a member of the {organisation} in {join_year}.",
                   "The {organisation} admitted {ref} as a member in the year {join_year}."],
    "instrument": ["In the evenings, {ref} liked to play the {instrument}.",
                   "Outside of work, {ref} spent long hours playing the {instrument}.",
                   "In spare hours, {ref} was a keen player of the {instrument}."],
    "pet": ["At home, {ref} kept {a_pet_kind} named {pet_name}.",
            "{ref} shared a house with {a_pet_kind} called {pet_name}.",
            "Living at home with {ref} was {a_pet_kind} named {pet_name}."],
}
INTRO_SENTENCES = ["birth", "occupation"]  # the sentences that can open a passage

# One atomic question per fact (2 wordings each); the answer is the attribute of the same name.
SIMPLE_QUESTIONS = {
    "birth_year": ["In what year was {name} born?", "When was {name} born?"],
    "birth_city": ["In which city was {name} born?", "What is the birthplace of {name}?"],
    "occupation": ["What was the occupation of {name}?", "What did {name} do for a living?"],
    "organisation": ["Which organisation did {name} join?", "What society was {name} a member of?"],
    "join_year": ["In what year did {name} join the {organisation}?", "When did {name} become a member of the {organisation}?"],
    "instrument": ["Which instrument did {name} play?", "What instrument did {name} practise?"],
    "pet_name": ["What was the name of the {pet_kind} of {name}?", "What was {name}'s {pet_kind} called?"],
}

# Questions that need two facts of the passage: (template, function of the entity -> answer).
COMPLEX_QUESTIONS = [
    ("How many years passed between the birth of {name} and joining the {organisation}?",
     lambda e: str(e.join_year - e.birth_year)),
    ("In which city was the {occupation} who joined the {organisation} in {join_year} born?",
     lambda e: e.birth_city),
    ("Which instrument did the {occupation} born in {birth_city} play?", lambda e: e.instrument),
    ("In what year was the owner of the {pet_kind} named {pet_name} born?", lambda e: str(e.birth_year)),
    ("Which organisation did the {instrument} player born in {birth_year} join?", lambda e: e.organisation),
]


# ---------------------------------------------------------------- description questions
# A description picks out a person by 2-3 of their facts instead of the name ("the maker of clocks
# born in Zelfort"). Some wordings reuse the passage's words ("the clockmaker"), others do not
# ("the maker of clocks", "the cellist", "a native of Zelfort"), so word overlap alone (BM25) does
# not settle the ranking and a reranker has to learn which candidate fits.
DESCRIBABLE = ["occupation", "birth_city", "birth_year", "organisation", "join_year", "instrument", "pet_kind"]

# Trade in other words: a noun phrase ("the maker of clocks") and a verb phrase ("made clocks").
TRADE_NOUNS = {"luthier": "maker of stringed instruments", "cartographer": "maker of maps",
               "glassblower": "blower of glass", "beekeeper": "keeper of bees",
               "astronomer": "watcher of the stars", "clockmaker": "maker of clocks",
               "weaver": "worker at the loom", "ferry pilot": "ferryman", "archivist": "keeper of records",
               "botanist": "student of plants", "bookbinder": "binder of books", "stonemason": "mason"}
TRADE_VERBS = {"luthier": "made stringed instruments", "cartographer": "drew maps",
               "glassblower": "blew glass", "beekeeper": "kept bees", "astronomer": "studied the stars",
               "clockmaker": "made clocks", "weaver": "wove cloth", "ferry pilot": "steered ferries",
               "archivist": "kept records", "botanist": "studied plants", "bookbinder": "bound books",
               "stonemason": "cut stone"}
PLAYERS = {"cello": "cellist", "oboe": "oboist", "harp": "harpist", "lute": "lutenist",
           "accordion": "accordionist", "bassoon": "bassoonist", "zither": "zither player",
           "flute": "flautist", "viola": "violist", "dulcimer": "dulcimer player", "banjo": "banjoist",
           "harmonium": "harmonium player"}

# Head nouns of a description, by the facts they state; "the person" when none of them is used.
HEADS = {
    ("occupation",): ["the {occupation}", "the {trade_noun}"],
    ("instrument",): ["the {instrument} player", "the {player}"],
    ("organisation",): ["the member of the {organisation}"],
    ("organisation", "join_year"): ["the member of the {organisation} since {join_year}"],
}
# Modifiers after the head, by the facts they state: participles first, then "who" clauses.
MODIFIERS = {
    ("birth_city",): ["born in {birth_city}", "from {birth_city}", "who was a native of {birth_city}",
                      "who hailed from {birth_city}"],
    ("birth_year",): ["born in {birth_year}", "born in the year {birth_year}",
                      "who came into the world in {birth_year}"],
    ("birth_city", "birth_year"): ["born in {birth_city} in {birth_year}",
                                   "born in {birth_year} in {birth_city}",
                                   "who came into the world in {birth_city} in {birth_year}"],
    ("occupation",): ["who worked as {a_occupation}", "who {trade_verb} for a living"],
    ("instrument",): ["who played the {instrument}", "who was a keen {player}"],
    ("organisation",): ["who belonged to the {organisation}", "who was a member of the {organisation}"],
    ("organisation", "join_year"): ["who joined the {organisation} in {join_year}",
                                    "who entered the {organisation} in {join_year}",
                                    "who had been a member of the {organisation} since {join_year}"],
    ("pet_kind",): ["who kept {a_pet_kind}", "who lived with {a_pet_kind}", "who owned {a_pet_kind}"],
}

# Asked fact -> (facts its frame states itself, frames). The frame's own facts count as part of
# the description ("the cat of ..."); the asked fact is never described.
DESCRIPTION_QUESTIONS = {
    "birth_year": ((), ["In what year was {desc} born?", "What was the birth year of {desc}?"]),
    "birth_city": ((), ["In which city was {desc} born?", "What was the birthplace of {desc}?",
                        "Which city did {desc} come from?"]),
    "occupation": ((), ["What was the trade of {desc}?", "What did {desc} do for a living?",
                        "What was the occupation of {desc}?"]),
    "organisation": ((), ["Which organisation did {desc} join?", "What society was {desc} a member of?"]),
    "join_year": (("organisation",), ["In what year did {desc} join the {organisation}?",
                                      "When did {desc} become a member of the {organisation}?"]),
    "instrument": ((), ["Which instrument did {desc} play?", "What instrument did {desc} practise?"]),
    "pet_name": (("pet_kind",), ["What was the name of the {pet_kind} of {desc}?",
                                 "What was the {pet_kind} of {desc} called?"]),
}
# Facts that would read oddly beside the asked one: a year of joining only comes with its society.
NOT_WITH = {"organisation": {"join_year"}}
# Words a frame and its description may share without saying a thing twice; any other shared word
# ("In what year was the clockmaker born in Zelfort born?") rules the frame out when another exists.
_FILLER = {"the", "a", "an", "of", "in", "what", "which", "was", "did", "who", "and", "since"}


def _a(word: str) -> str:
    """Indefinite article: _a("owl") -> "an owl", _a("cat") -> "a cat"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


@dataclass
class Entity:
    """One person of the world: 7 facts, a passage and a paraphrase of it."""
    name: str
    surname: str
    split: str  # one of SPLITS: "train", "dev" or "test"
    birth_year: int
    birth_city: str
    occupation: str
    organisation: str
    join_year: int
    instrument: str
    pet_kind: str
    pet_name: str
    passage: str = ""
    paraphrase: str = ""

    def slots(self) -> dict:
        """Template slots: the facts plus the derived forms the templates use."""
        return dict(vars(self), a_occupation=_a(self.occupation), a_pet_kind=_a(self.pet_kind),
                    trade_noun=TRADE_NOUNS[self.occupation], trade_verb=TRADE_VERBS[self.occupation],
                    player=PLAYERS[self.instrument])

    def answer(self, fact: str) -> str:
        """The short answer string of a fact, e.g. answer("birth_year") -> "1873"."""
        return str(getattr(self, fact))


# The parts of the world: people trained on, held-out people for development, held-out people for test.
SPLITS = ("train", "dev", "test")


@dataclass
class World:
    """All people of the world, train ones first, made by `build_world(seed, ...)`."""
    seed: int
    people: list[Entity]

    def entities(self, split: str = "train") -> list[Entity]:
        """The people of one part (SPLITS), or of "heldout": dev and test together (rows made from
        it mix the two parts; write_corpus never makes them)."""
        if split not in SPLITS + ("heldout",):
            raise ValueError(f"split must be one of {SPLITS + ('heldout',)}, got {split!r}")
        parts = ("dev", "test") if split == "heldout" else (split,)
        return [e for e in self.people if e.split in parts]

    def passages(self, split: str = "train") -> list[str]:
        return [e.passage for e in self.entities(split)]


# ---------------------------------------------------------------- building the world
def _render(e: Entity, rng: random.Random, templates: dict[str, int], intro: str, order: list[str]) -> str:
    """Write the sentences `intro` + `order` with the chosen template index per sentence.
    The intro names the person in full; later sentences use the surname (or, 1 in 4, the full name)."""
    out = []
    for i, key in enumerate([intro] + order):
        ref = e.name if i == 0 or rng.random() < 0.25 else e.surname
        sentence = SENTENCES[key][templates[key]].format(ref=ref, **e.slots())
        out.append(sentence[0].upper() + sentence[1:])
    return " ".join(out)


def _write_passage_and_paraphrase(e: Entity, rng: random.Random) -> None:
    templates = {key: rng.randrange(3) for key in SENTENCES}
    intro = rng.choice(INTRO_SENTENCES)
    order = rng.sample([k for k in SENTENCES if k != intro], len(SENTENCES) - 1)
    e.passage = _render(e, rng, templates, intro, order)
    # Paraphrase: every sentence with another template, the other intro, a different order.
    other = {key: (t + 1 + rng.randrange(2)) % 3 for key, t in templates.items()}
    p_intro = INTRO_SENTENCES[1 - INTRO_SENTENCES.index(intro)]
    p_order = order
    while p_order == order:
        p_order = rng.sample([k for k in SENTENCES if k != p_intro], len(SENTENCES) - 1)
    e.paraphrase = _render(e, rng, other, p_intro, p_order)


def _invent_names(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n distinct (full name, surname) pairs; no full name is a substring of another."""
    names: list[tuple[str, str]] = []
    while len(names) < n:
        first = (rng.choice(FIRST_START) + rng.choice(FIRST_END)).capitalize()
        surname = (rng.choice(SUR_START) + rng.choice(SUR_MID) + rng.choice(SUR_END)).capitalize()
        full = f"{first} {surname}"
        if all(full not in other and other not in full for other, _ in names):
            names.append((full, surname))
    return names


def build_world(seed: int = 0, n_train: int = 320, n_heldout: int = 80) -> World:
    """Make the world: n_train + n_heldout people, each with 7 facts, a passage and a paraphrase.
    The held-out people are "dev" (the first n_heldout - n_heldout // 2) then "test" (the last
    n_heldout // 2). Deterministic: the same seed gives the same world on any machine
    (random.Random only), and the split draws nothing, so the people are those of before it."""
    rng = random.Random(seed)
    people = []
    n_dev = n_heldout - n_heldout // 2
    for i, (name, surname) in enumerate(_invent_names(rng, n_train + n_heldout)):
        birth_year = rng.randint(1840, 1960)
        split = "train" if i < n_train else "dev" if i < n_train + n_dev else "test"
        e = Entity(name=name, surname=surname, split=split,
                   birth_year=birth_year, birth_city=rng.choice(CITIES),
                   occupation=rng.choice(OCCUPATIONS), organisation=rng.choice(ORGANISATIONS),
                   join_year=birth_year + rng.randint(18, 45), instrument=rng.choice(INSTRUMENTS),
                   pet_kind=rng.choice(PET_KINDS), pet_name=rng.choice(PET_NAMES))
        _write_passage_and_paraphrase(e, rng)
        n_words = len(e.passage.split())
        assert 45 <= n_words <= 90, f"passage of {name} has {n_words} words (want 45-90): {e.passage}"
        people.append(e)
    return World(seed=seed, people=people)


# ---------------------------------------------------------------- rows in the official formats
def pretrain_rows(world: World, split: str = "train") -> list[dict]:
    """SCP rows, 3 per passage in passage order: simple QA (all 7 facts, one question each),
    complex QA (5 questions that each need two facts), paraphrase (same facts, other wording).
    Question wordings are the first of each list, so the rows are the same for every call."""
    rows = []
    for e in world.entities(split):
        s = e.slots()
        rows.append({"data_type": "qa", "qa_kind": "simple",
                     "question": [q[0].format(**s) for q in SIMPLE_QUESTIONS.values()],
                     "answers": [e.answer(fact) for fact in SIMPLE_QUESTIONS], "docs": [e.passage]})
        rows.append({"data_type": "qa", "qa_kind": "complex",
                     "question": [q.format(**s) for q, _ in COMPLEX_QUESTIONS],
                     "answers": [answer(e) for _, answer in COMPLEX_QUESTIONS], "docs": [e.passage]})
        rows.append({"data_type": "paraphrase", "question": "", "answers": [e.paraphrase], "docs": [e.passage]})
    return rows


def _similar_first(gold: Entity, pool: list[Entity], n: int, rng: random.Random) -> list[Entity]:
    """The n people of `pool` (gold excluded) that share most of city, trade and society with
    `gold`, ties broken at random: distractors that differ from the gold mainly by name."""
    others = [e for e in pool if e is not gold]
    return sorted(others, key=lambda e: (-_likeness(e, gold), rng.random()))[:n]


def _likeness(e: Entity, gold: Entity) -> int:
    """How many of city, trade and society `e` shares with `gold` (0-3)."""
    return ((e.birth_city == gold.birth_city) + (e.occupation == gold.occupation)
            + (e.organisation == gold.organisation))


def _row(question: str, docs: list[str], answer: str, pos: int, kind: str, described_by: list[str]) -> dict:
    """An instruct / end-to-end row: the official fields, then which kind of question it is and
    which facts of the gold person the question uses to pick them out."""
    return {"question": question, "docs": docs, "answer": answer, "gold_answer": answer, "pos_index": [pos],
            "question_kind": kind, "described_by": described_by}


def _name_rows(pool: list[Entity], n_docs: int, rng: random.Random) -> list[dict]:
    """One row per (passage, fact), shuffled: a question naming the person in full, the gold
    among the n_docs - 1 people most like them in city, trade and society."""
    rows = []
    for gold in pool:
        for fact, wordings in SIMPLE_QUESTIONS.items():
            docs = [e.passage for e in _similar_first(gold, pool, n_docs - 1, rng)]
            pos = rng.randrange(n_docs)
            docs.insert(pos, gold.passage)
            question = rng.choice(wordings).format(**gold.slots())
            rows.append(_row(question, docs, gold.answer(fact), pos, "name", ["name"]))
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------- description rows
def _values(e: Entity, facts: tuple[str, ...]) -> tuple:
    return tuple(getattr(e, f) for f in facts)


def description_options(fact: str) -> list[tuple[str, ...]]:
    """Every set of 2 or 3 facts (in DESCRIBABLE order) that may describe a person in a question
    asking `fact`: never the asked fact, always the facts its frame states, and a year of joining
    only together with its society.
    >>> description_options("pet_name")[:2]
    [('occupation', 'pet_kind'), ('birth_city', 'pet_kind')]
    """
    frame_facts, _ = DESCRIPTION_QUESTIONS[fact]
    free = [f for f in DESCRIBABLE if f != fact and f not in frame_facts and f not in NOT_WITH.get(fact, ())]
    options = []
    for size in (2, 3):
        for extra in itertools.combinations(free, size - len(frame_facts)):
            facts = set(frame_facts) | set(extra)
            if "join_year" not in facts or "organisation" in facts:
                options.append(tuple(f for f in DESCRIBABLE if f in facts))
    return options


def _fact_counts(people: list[Entity]) -> Counter:
    """How many of `people` have each (fact set, values) of every description option."""
    options = {fs for fact in DESCRIPTION_QUESTIONS for fs in description_options(fact)}
    return Counter((fs, _values(e, fs)) for e in people for fs in options)


def _choose_facts(gold: Entity, fact: str, counts: list[Counter], rng: random.Random) -> tuple[str, ...]:
    """The facts a question asking `fact` of `gold` describes them by: an option unique in the first
    scope of `counts` (the world, then the split) that has one, drawn by `_balanced`. If none is
    unique even in the split, the option fitting the fewest people (kept out of the candidates)."""
    options = description_options(fact)
    for count in counts:
        unique = [fs for fs in options if count[fs, _values(gold, fs)] == 1]
        if unique:
            return rng.choice(_balanced(unique, rng))
    return min(options, key=lambda fs: counts[-1][fs, _values(gold, fs)])


def _pick_half(a: list, b: list, rng: random.Random) -> list:
    """a or b with even odds, or whichever is not empty."""
    return a if a and (not b or rng.random() < 0.5) else b


def _balanced(options: list[tuple[str, ...]], rng: random.Random) -> list[tuple[str, ...]]:
    """The options of one size (2 or 3 facts, even odds) and one kind (with a year or without,
    even odds). Why: a year is nearly unique on its own, so most unique options hold one, and a
    year is a rare word that BM25 matches at once; an even draw keeps trade, city, society,
    instrument and pet in the descriptions."""
    options = _pick_half([o for o in options if len(o) == 2], [o for o in options if len(o) == 3], rng)
    def has_year(o): return "birth_year" in o or "join_year" in o
    return _pick_half([o for o in options if has_year(o)], [o for o in options if not has_year(o)], rng)


def _units(facts: list[str]) -> list[tuple[str, ...]]:
    """Group facts into the keys of HEADS / MODIFIERS: city with year of birth, society with year of joining."""
    units, rest = [], list(facts)
    for pair in (("birth_city", "birth_year"), ("organisation", "join_year")):
        if all(f in rest for f in pair):
            units.append(pair)
            rest = [f for f in rest if f not in pair]
    return units + [(f,) for f in rest]


def _describe(e: Entity, facts: list[str], rng: random.Random) -> str:
    """A noun phrase that picks out `e` by `facts`, without the name:
    "the maker of clocks born in Zelfort who kept a cat". The head is a trade, an instrument or a
    society when the facts include one (else "the person"); the other facts follow it."""
    units = _units(facts)
    head_unit = rng.choice([u for u in units if u in HEADS] + [None])
    head = rng.choice(HEADS[head_unit]) if head_unit else "the person"
    mods = [rng.choice(MODIFIERS[u]) for u in units if u != head_unit]
    rng.shuffle(mods)
    participles = [m for m in mods if not m.startswith("who ")]
    clauses = [m[len("who "):] for m in mods if m.startswith("who ")]
    if len(clauses) > 1:  # "who kept a cat, drew maps and played the harp"
        clauses = [", ".join(clauses[:-1]) + " and " + clauses[-1]]
    phrase = " ".join([head] + participles + (["who " + clauses[0]] if clauses else []))
    return phrase.format(**e.slots())


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower())) - _FILLER


def _description_question(e: Entity, fact: str, facts: tuple[str, ...], rng: random.Random) -> str:
    """The question asking `fact` of `e`, who is described by `facts` (some stated by the frame).
    Frames that would repeat a word of the description ("was the man born in X born?") are avoided."""
    frame_facts, frames = DESCRIPTION_QUESTIONS[fact]
    desc = _describe(e, [f for f in facts if f not in frame_facts], rng)
    slots = e.slots()
    clash = {f: len(_words(f.format(desc="", **slots)) & _words(desc)) for f in frames}
    frame = rng.choice([f for f in frames if clash[f] == min(clash.values())])
    return frame.format(desc=desc, **slots)


def _description_distractors(gold: Entity, facts: tuple[str, ...], pool: list[Entity], n: int,
                             rng: random.Random) -> list[Entity]:
    """n people of `pool` who share as many described facts with `gold` as possible, but never all
    (so only the gold fits the description). Ties go first to people whose passage holds a described
    year in the other role (born in the year the gold joined, or the reverse: a word trap for BM25),
    then to people like the gold in city, trade or society, then at random."""
    def rank(e: Entity) -> tuple:  # smaller first
        year_trap = (("birth_year" in facts and e.join_year == gold.birth_year)
                     + ("join_year" in facts and e.birth_year == gold.join_year))
        return -shared[id(e)], -year_trap, -_likeness(e, gold), rng.random()
    gold_values = _values(gold, facts)
    shared = {id(e): sum(map(operator.eq, _values(e, facts), gold_values)) for e in pool}
    others = [e for e in pool if e is not gold and shared[id(e)] < len(facts)]
    if len(others) < n:
        raise ValueError(f"{gold.name}: only {len(others)} people of the split do not fit the "
                         f"description by {facts}, need {n} distractors")
    return sorted(others, key=rank)[:n]


def _description_rows(world: World, split: str, n_docs: int, rng: random.Random) -> list[dict]:
    """One row per (passage, fact), shuffled: a question describing the person by 2-3 other facts,
    the gold among n_docs - 1 people who share part of the description."""
    pool = world.entities(split)
    counts = [_fact_counts(world.people), _fact_counts(pool)]
    rows = []
    for gold in pool:
        for fact in SIMPLE_QUESTIONS:
            facts = _choose_facts(gold, fact, counts, rng)
            docs = [e.passage for e in _description_distractors(gold, facts, pool, n_docs - 1, rng)]
            pos = rng.randrange(n_docs)
            docs.insert(pos, gold.passage)
            question = _description_question(gold, fact, facts, rng)
            rows.append(_row(question, docs, gold.answer(fact), pos, "description", list(facts)))
    rng.shuffle(rows)
    return rows


QUESTION_KINDS = ("description", "name", "both")


def _retrieval_rows(world: World, split: str, n_docs: int, stem: str, seed: int, questions: str) -> list[dict]:
    """Rows of one split with description questions, name questions, or both (shuffled together).
    Each kind has its own random stream, so the name rows are the same whatever `questions` is."""
    if questions not in QUESTION_KINDS:
        raise ValueError(f"questions must be one of {QUESTION_KINDS}, got {questions!r}")
    pool = world.entities(split)
    if n_docs > len(pool):
        raise ValueError(f"asked for {n_docs} candidate passages per question, but split "
                         f"{split!r} has only {len(pool)} passages")
    rows, tag = [], f"{world.seed}-{split}-{seed}"
    if questions in ("description", "both"):
        rows += _description_rows(world, split, n_docs, random.Random(f"{stem}-description-{tag}"))
    if questions in ("name", "both"):  # the stream name rows always had, so they stay as they were
        rows += _name_rows(pool, n_docs, random.Random(f"{stem}-{tag}"))
    if questions == "both":
        random.Random(f"{stem}-both-{tag}").shuffle(rows)
    return rows


def instruct_rows(world: World, split: str = "train", k: int = 5, seed: int = 0,
                  questions: str = "description") -> list[dict]:
    """Instruction-tuning rows: one per (passage, fact) and question kind, shuffled; k docs, gold at a
    random position. `answer` == `gold_answer` (no teacher). `questions`: see QUESTION_KINDS."""
    return _retrieval_rows(world, split, k, "instruct", seed, questions)


def e2e_rows(world: World, split: str = "train", n_candidates: int = 20, seed: int = 0,
             questions: str = "description") -> list[dict]:
    """End-to-end rows: one per (passage, fact) and question kind, shuffled; N candidates, gold at a
    random position among people who share part of the description (or, for name questions, the
    most similar people: then the reranker only has to read the name)."""
    return _retrieval_rows(world, split, n_candidates, "e2e", seed, questions)


def write_corpus(out_dir: str, seed: int = 0, n_train: int = 320, n_heldout: int = 80,
                 k: int = 5, n_candidates: int = 20, questions: str = "description") -> dict[str, str]:
    """Write the JSONL files of one world into out_dir and return {name: path}.
    Training: pretrain, instruct, e2e_train. Development (the "dev" people; the names they had
    before the test part existed): pretrain_heldout (compression on unseen passages), instruct_heldout,
    e2e_heldout; for logged diagnostics and for choosing recipes. Test (the "test" people): e2e_test
    and pretrain_test, for the reported figures only. Never train on the last two groups.
    `questions` picks the kind of the instruct and end-to-end questions (QUESTION_KINDS)."""
    world = build_world(seed, n_train, n_heldout)
    files = {
        "pretrain": pretrain_rows(world, "train"),
        "pretrain_heldout": pretrain_rows(world, "dev"),
        "pretrain_test": pretrain_rows(world, "test"),
        "instruct": instruct_rows(world, "train", k, seed, questions),
        "instruct_heldout": instruct_rows(world, "dev", k, seed, questions),
        "e2e_train": e2e_rows(world, "train", n_candidates, seed, questions),
        "e2e_heldout": e2e_rows(world, "dev", n_candidates, seed, questions),
        "e2e_test": e2e_rows(world, "test", n_candidates, seed, questions),
    }
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, rows in files.items():
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return paths


# ---------------------------------------------------------------- how hard is the ranking?
def bm25_mrr(rows: list[dict]) -> float:
    """MRR of the gold passages when BM25 (IDF over each row's own candidates) ranks the candidates."""
    from metrics import bm25_scores, rank_from_scores, reciprocal_rank, summarize
    return summarize(reciprocal_rank(rank_from_scores(bm25_scores(r["question"], r["docs"])), r["pos_index"])
                     for r in rows)


def bm25_report(world: World, n_candidates: int = 20, seed: int = 0, split: str = "test") -> dict[str, float]:
    """BM25 MRR on the end-to-end rows of one part (SPLITS) for each question kind, and the MRR of a
    random order (the mean of 1/rank over ranks 1..N): where the lexical baseline sits between chance and 1."""
    report = {kind: bm25_mrr(e2e_rows(world, split, n_candidates, seed, kind))
              for kind in ("description", "name")}
    report["random"] = sum(1 / r for r in range(1, n_candidates + 1)) / n_candidates
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the fictional-world CLaRa corpus as JSONL.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=320, help="people whose passages are trained on")
    parser.add_argument("--n-heldout", type=int, default=80,
                        help="people kept out of training: the first half for development, the second for test")
    parser.add_argument("--k", type=int, default=5, help="docs per instruct row")
    parser.add_argument("--n-candidates", type=int, default=20, help="docs per end-to-end row")
    parser.add_argument("--questions", choices=QUESTION_KINDS, default="description",
                        help="instruct and end-to-end questions: describe the person, name them, or both")
    parser.add_argument("--report", action="store_true",
                        help="also print BM25 MRR on the dev and test end-to-end rows of each question kind")
    args = parser.parse_args()
    n_test = args.n_heldout // 2
    print(f"seed {args.seed}: {args.n_train} train people, {args.n_heldout - n_test} dev people, "
          f"{n_test} test people, {args.questions} questions")
    paths = write_corpus(args.out, args.seed, args.n_train, args.n_heldout, args.k, args.n_candidates,
                         args.questions)
    for name, path in paths.items():
        with open(path, encoding="utf-8") as f:
            print(f"{name:17s} {sum(1 for _ in f):6d} rows  {path}")
    if args.report:
        world = build_world(args.seed, args.n_train, args.n_heldout)
        for split in ("dev", "test"):
            report = bm25_report(world, args.n_candidates, args.seed, split)
            print(f"BM25 MRR, {split} end-to-end rows, N = {args.n_candidates}: "
                  + ", ".join(f"{kind} {100 * mrr:.1f}" for kind, mrr in report.items()))
