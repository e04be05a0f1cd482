"""The default corpus: a small fictional world, made here from a seed (no download).

Why fictional: every person, city and society is invented, so a pretrained model cannot answer
from memory; a correct answer has to come through the compressed memory vectors of the passage.

How the world is built (`build_world`):
1. Names. First names and surnames are glued from invented syllables ("Varel Oskin"). Every full
   name is unique and none contains another, so a full name picks out exactly one passage.
2. Facts. Each person draws 7 facts from small shared pools: birth year, birth city (12 invented
   cities), occupation (12 trades), organisation (10 invented societies), the year of joining it,
   an instrument, and a pet (kind and invented name). The pools are shared, so many people have
   the same city, trade or society: passages look alike and only the name tells them apart.
3. Passages. Five sentences (birth, occupation, membership, instrument, pet), each from one of 3
   templates; the intro sentence (birth or occupation) names the person in full, the other four
   come in a shuffled order and mostly use the surname. About 50-75 words, asserted 45-90.
   The paraphrase of a passage states the same facts with other templates and another order.
4. Split. The first `n_train` people are "train", the other `n_heldout` are "heldout". Training
   rows use only train passages, as gold and as distractors; held-out rows use only held-out ones.

Rows, with the official CLaRa JSONL field names (DESIGN.md section 5):
- `pretrain_rows`: 3 rows per passage, in passage order: simple QA (one question per fact),
  complex QA (each question needs two facts of the passage), paraphrase.
- `instruct_rows` / `e2e_rows`: one row per (passage, fact), shuffled; a single-fact question that
  names the person in full, a short answer, and k (or N) candidates: the gold passage at a random
  position (`pos_index`) among the most similar other passages (same city, trade or society).

Example:
    >>> world = build_world(seed=0, n_train=8, n_heldout=4)
    >>> len(world.entities("train")), len(pretrain_rows(world)), len(e2e_rows(world, n_candidates=5))
    (8, 24, 56)
"""
import argparse
import json
import os
import random
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


def _a(word: str) -> str:
    """Indefinite article: _a("owl") -> "an owl", _a("cat") -> "a cat"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


@dataclass
class Entity:
    """One person of the world: 7 facts, a passage and a paraphrase of it."""
    name: str
    surname: str
    split: str  # "train" or "heldout"
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
        return dict(vars(self), a_occupation=_a(self.occupation), a_pet_kind=_a(self.pet_kind))

    def answer(self, fact: str) -> str:
        """The short answer string of a fact, e.g. answer("birth_year") -> "1873"."""
        return str(getattr(self, fact))


@dataclass
class World:
    """All people of the world, train ones first, made by `build_world(seed, ...)`."""
    seed: int
    people: list[Entity]

    def entities(self, split: str = "train") -> list[Entity]:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        return [e for e in self.people if e.split == split]

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
    Deterministic: the same seed gives the same world on any machine (random.Random only)."""
    rng = random.Random(seed)
    people = []
    for i, (name, surname) in enumerate(_invent_names(rng, n_train + n_heldout)):
        birth_year = rng.randint(1840, 1960)
        e = Entity(name=name, surname=surname, split="train" if i < n_train else "heldout",
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
    def shared(e: Entity) -> int:
        return ((e.birth_city == gold.birth_city) + (e.occupation == gold.occupation)
                + (e.organisation == gold.organisation))
    others = [e for e in pool if e is not gold]
    return sorted(others, key=lambda e: (-shared(e), rng.random()))[:n]


def _retrieval_rows(world: World, split: str, n_docs: int, rng: random.Random) -> list[dict]:
    """One row per (passage, fact) of the split: question, n_docs candidates, short answer."""
    pool = world.entities(split)
    if n_docs > len(pool):
        raise ValueError(f"asked for {n_docs} candidate passages per question, but split "
                         f"{split!r} has only {len(pool)} passages")
    rows = []
    for gold in pool:
        for fact, wordings in SIMPLE_QUESTIONS.items():
            docs = [e.passage for e in _similar_first(gold, pool, n_docs - 1, rng)]
            pos = rng.randrange(n_docs)
            docs.insert(pos, gold.passage)
            answer = gold.answer(fact)
            rows.append({"question": rng.choice(wordings).format(**gold.slots()), "docs": docs,
                         "answer": answer, "gold_answer": answer, "pos_index": [pos]})
    rng.shuffle(rows)
    return rows


def instruct_rows(world: World, split: str = "train", k: int = 5, seed: int = 0) -> list[dict]:
    """Instruction-tuning rows: one per (passage, fact), shuffled; k docs, gold at a random position
    among the k-1 most similar passages of the split. `answer` == `gold_answer` (no teacher)."""
    return _retrieval_rows(world, split, k, random.Random(f"instruct-{world.seed}-{split}-{seed}"))


def e2e_rows(world: World, split: str = "train", n_candidates: int = 20, seed: int = 0) -> list[dict]:
    """End-to-end rows: one per (passage, fact), shuffled; N candidates, gold at a random position
    among the N-1 most similar passages of the split (the reranker has to read the name)."""
    return _retrieval_rows(world, split, n_candidates, random.Random(f"e2e-{world.seed}-{split}-{seed}"))


def write_corpus(out_dir: str, seed: int = 0, n_train: int = 320, n_heldout: int = 80,
                 k: int = 5, n_candidates: int = 20) -> dict[str, str]:
    """Write the JSONL files of one world into out_dir and return {name: path}.
    pretrain_heldout is for measuring compression on unseen passages; never train on it."""
    world = build_world(seed, n_train, n_heldout)
    files = {
        "pretrain": pretrain_rows(world, "train"),
        "pretrain_heldout": pretrain_rows(world, "heldout"),
        "instruct": instruct_rows(world, "train", k, seed),
        "instruct_heldout": instruct_rows(world, "heldout", k, seed),
        "e2e_train": e2e_rows(world, "train", n_candidates, seed),
        "e2e_heldout": e2e_rows(world, "heldout", n_candidates, seed),
    }
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, rows in files.items():
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the fictional-world CLaRa corpus as JSONL.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=320, help="people whose passages are trained on")
    parser.add_argument("--n-heldout", type=int, default=80, help="people kept for evaluation only")
    parser.add_argument("--k", type=int, default=5, help="docs per instruct row")
    parser.add_argument("--n-candidates", type=int, default=20, help="docs per end-to-end row")
    args = parser.parse_args()
    print(f"seed {args.seed}: {args.n_train} train people, {args.n_heldout} held-out people")
    paths = write_corpus(args.out, args.seed, args.n_train, args.n_heldout, args.k, args.n_candidates)
    for name, path in paths.items():
        with open(path, encoding="utf-8") as f:
            print(f"{name:17s} {sum(1 for _ in f):6d} rows  {path}")
