"""SCP data synthesis: turn any passages into CLaRa's stage-1 pretraining data (paper Sec. 2.1).

Stage 1 ("Salient Compressor Pretraining") trains the compressor on three kinds of targets made
from each passage by an LLM: simple QA (one atomic fact per question, the questions jointly
covering the passage), complex QA (each question needs two or more facts) and a paraphrase that
keeps every fact. This script makes them, in the official JSONL format that
`train.py --stage pretrain --data` reads:

    {"data_type": "qa", "question": [q1, ..], "answers": [a1, ..], "docs": [passage]}
    {"data_type": "paraphrase", "question": "", "answers": [paraphrase], "docs": [passage]}

The recipe, and where it follows or simplifies the paper:
    1. generate  simple QA, complex QA and a paraphrase per passage (prompts: the constants below);
    2. parse     tolerantly (`parse_qa`); a malformed generation is dropped and counted;
    3. verify    with the same model: a yes/no question per QA pair ("supported by the passage?")
                 and per paraphrase ("faithful?"); only a first word "yes" keeps it;
    4. cover     `rounds` extra rounds ask for new questions on the passage's numbers and names
                 that no kept pair mentions yet (simplified: what is "not yet covered" is decided
                 by a deterministic string check, not by the LLM);
    5. report    a cheap judge-free check (`quality_report`): the share of each answer's tokens
                 found in the passage, and the share of the passage's numbers and capitalised
                 names each paraphrase keeps.
The paper generates and verifies with Qwen-32B. The default here is the packaged
SmolLM2-135M-Instruct, so that the script runs offline; be warned that it writes poor, repetitive
questions, and as a judge it answers "no" to every QA check we tried (36 of 36 official pairs, half
of them true), so with the defaults expect no QA pairs out. For real data use a larger instruct
model on a GPU (`--backbone Qwen/Qwen2.5-7B-Instruct`), or `--no-verify` to keep all parseable output.

    python scp.py --input passages.jsonl --out pretrain.jsonl [--backbone smollm2-135m] [--limit N]
                  [--rounds R] [--batch-size B] [--max-new-tokens T] [--no-verify] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import re
import string
import time

# ------------------------------------------------------------------------------------- prompts
# Passage first, instruction last, named kinds of facts: SmolLM2-135M keeps to the format far more
# often so (tried on 3 passages: a few-shot example made it ask about the example; an
# instruction first, or "one question per fact", made it repeat one question until the limit).

SIMPLE_QA = """{passage}

Write 5 questions about the text above. Each question asks about a single fact, such as a name, \
a date or a place. After each question, write its short answer from the text. Use this format:
Question: <question>
Answer: <answer>"""  # "jointly covering the passage" is the job of the MORE_QA rounds

COMPLEX_QA = """{passage}

Write 3 questions about the text above that each need two or more of its facts to answer. After \
each question, write its answer, using only the text. Use this format:
Question: <question>
Answer: <answer>"""

PARAPHRASE = """{passage}

Rewrite the text above in different words. Keep every fact, name and number, and add nothing. \
Write only the rewritten text."""

MORE_QA = """{passage}

These questions about the text above are already written:
{questions}

Write new questions about facts of the text that they do not ask about, such as {missing}. After \
each question, write its answer: a short phrase taken from the text. Use this format:
Question: <question>
Answer: <answer>"""

VERIFY_QA = """{passage}

Question: {question}
Answer: {answer}

Is the answer correct and supported by the text above? Reply with yes or no."""

VERIFY_PARAPHRASE = """Text: {passage}

Rewritten text: {paraphrase}

Does the rewritten text keep the facts of the text, without changing or adding any? Reply with \
yes or no."""

# ------------------------------------------------------------------------------------- parsing

# A labelled line: optional list marker or markdown ("1.", "-", "**"), then "Question"/"Q" or
# "Answer"/"A", an optional number ("Q1", "Question 2"), a colon, the text.
_LABEL = re.compile(r"^[\s*#>_-]*(?:\d+[.)]\s*)?[*_]*(question|answer|q|a)\s*\d*\s*[*_]*:[*_]*\s*(.*)$",
                    re.IGNORECASE)
_SAME_LINE_ANSWER = re.compile(r"(?<=[?.!\"])[ \t]+(?=(?:Answer|A)\s*\d*\s*:)")  # after a question's end


def _clean(text: str) -> str:
    """Collapse whitespace and strip wrapping quotes: ' "Paris"  ' -> 'Paris'."""
    return " ".join(text.split()).strip().strip('"“”').strip()


def parse_qa(text: str) -> tuple[list[tuple[str, str]], int]:
    """Parse "Question: ../Answer: .." pairs from a generation; return (pairs, n_dropped).

    Tolerates numbering ("1. Question:", "Q1:", "- Q:"), markdown bold, "Q:/A:" labels, an answer
    on the question's line, extra whitespace, and text continued on the following lines (up to a
    blank line). A question without an answer, or an answer without a question, is dropped and
    counted in n_dropped.

    >>> parse_qa("1. Q: Who built it?\\nA: Eiffel\\n2. Q: When?\\nA:\\n1889\\nQ: Where?")
    ([('Who built it?', 'Eiffel'), ('When?', '1889')], 1)
    """
    text = _SAME_LINE_ANSWER.sub("\n", text)  # "Q: Who? A: Ada" -> two lines
    pairs, dropped = [], 0
    question, answer, field = None, None, None  # field: which one unlabelled lines continue

    def close():
        nonlocal question, answer, dropped
        if question is not None or answer is not None:
            q, a = _clean(question or ""), _clean(answer or "")
            if q and a:
                pairs.append((q, a))
            else:
                dropped += 1
        question = answer = None

    for line in text.splitlines():
        match = _LABEL.match(line)
        if match:
            kind, rest = match.group(1).lower()[0], match.group(2)
            if kind == "q" or answer is not None:  # a new question, or a second answer: new pair
                close()
            if kind == "q":
                question, field = rest, "q"
            else:
                answer, field = rest, "a"
        elif not line.strip():
            filled = question if field == "q" else answer
            if filled is not None and filled.strip():
                field = None  # a blank line ends a field that already has text
        elif field == "q":
            question += " " + line
        elif field == "a":
            answer += " " + line
    close()
    return pairs, dropped


def parse_verdict(text: str) -> bool | None:
    """The judge's first word: "Yes." -> True, "no, because .." -> False, anything else -> None."""
    match = re.match(r"\W*(\w+)", text)
    word = match.group(1).lower() if match else ""
    return {"yes": True, "no": False}.get(word)


def looping(text: str, n: int = 4, min_distinct: float = 0.6) -> bool:
    """True if under min_distinct of the text's word n-grams are distinct: a generation stuck in a
    loop ("The film was a success, with .. The film was a success, with .."), common at 135M."""
    words = text.split()
    ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return bool(ngrams) and len(set(ngrams)) < min_distinct * len(ngrams)


def clean_paraphrase(text: str, min_words: int = 5) -> str | None:
    """Strip a preamble line ("Here is the rewritten text:"); None if under min_words or looping."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].rstrip().endswith(":"):
        lines = lines[1:]
    paraphrase = _clean(" ".join(lines))
    return paraphrase if len(paraphrase.split()) >= min_words and not looping(paraphrase) else None


# -------------------------------------------------------------- judge-free quality measures

def _normalise(text: str) -> list[str]:
    """SQuAD-style answer normalisation: lower case, no punctuation, no articles, split."""
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return [w for w in text.split() if w not in ("a", "an", "the")]


def answer_support(answer: str, passage: str) -> float:
    """Share of the answer's normalised tokens that occur in the passage.

    >>> answer_support("In the year 1889!", "The tower was built in 1889.")
    0.6666666666666666
    """
    tokens, passage_tokens = _normalise(answer), set(_normalise(passage))
    return sum(t in passage_tokens for t in tokens) / len(tokens) if tokens else 0.0


def key_terms(passage: str) -> set[str]:
    """Numbers and capitalised words that do not start a sentence (names, mostly).

    >>> sorted(key_terms("The tower opened in 1889. Gustave Eiffel's firm built it in Paris."))
    ['1889', 'Eiffel', 'Paris']
    """
    words, terms = passage.split(), set()
    for i, word in enumerate(words):
        core = re.sub(r"['’]s$", "", word.strip(string.punctuation + "“”‘’"))
        sentence_start = i == 0 or words[i - 1].endswith((".", "!", "?", ":"))
        if any(ch.isdigit() for ch in core) or (core[:1].isupper() and not sentence_start):
            terms.add(core)
    return terms


def term_retention(paraphrase: str, passage: str) -> float:
    """Share of the passage's key terms found (as substrings) in the paraphrase; 1.0 if none."""
    terms = key_terms(passage)
    return sum(t in paraphrase for t in terms) / len(terms) if terms else 1.0


def quality_report(rows: list[dict]) -> dict:
    """Judge-free figures for pretraining rows: per-pair answer support, per-paraphrase retention."""
    qa = [r for r in rows if r["data_type"] == "qa"]
    support = [answer_support(a, r["docs"][0]) for r in qa for a in r["answers"]]
    paraphrases = [r for r in rows if r["data_type"] == "paraphrase"]
    retention = [term_retention(r["answers"][0], r["docs"][0]) for r in paraphrases]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"qa_support": support, "paraphrase_retention": retention,
            "mean_answer_support": mean(support), "mean_term_retention": mean(retention),
            "answers_fully_in_passage": mean([s == 1.0 for s in support])}


# -------------------------------------------------------------------------------- generation

def make_generate_fn(model, tokenizer, max_new_tokens: int = 256):
    """Batched greedy generation: chat-formatted user prompts in, completions (text) out."""
    import torch

    if tokenizer.pad_token is None:  # padding needs a pad token; eos will do, pads are masked out
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()

    @torch.no_grad()
    def generate(prompts: list[str]) -> list[str]:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        # left padding: every prompt ends at the last column, so new tokens line up (B, T)
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                          add_special_tokens=False).to(model.device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)  # (B, T + new)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


def _run(generate_fn, prompts: list[str], batch_size: int, desc: str) -> list[str]:
    """generate_fn over prompts in batches, with a progress bar; checks one output per prompt."""
    from tqdm import tqdm

    outputs = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not prompts) as bar:
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i:i + batch_size]
            done = generate_fn(batch)
            if len(done) != len(batch):
                raise ValueError(f"generate_fn returned {len(done)} outputs for {len(batch)} prompts")
            outputs += done
            bar.update(len(batch))
    return outputs


def _judge(judge_fn, prompts: list[str], batch_size: int, desc: str, stats: dict) -> list[bool]:
    """Yes/no verdicts; an answer that is neither is counted as unclear and rejects."""
    verdicts = [parse_verdict(v) for v in _run(judge_fn, prompts, batch_size, desc)]
    stats["verdicts_unclear"] += sum(v is None for v in verdicts)
    return [v is True for v in verdicts]


def _missing_terms(passage: str, pairs: list[tuple[str, str]]) -> list[str]:
    """Key terms of the passage that no kept question or answer mentions yet (sorted)."""
    said = " ".join(q + " " + a for q, a in pairs)
    return sorted(t for t in key_terms(passage) if t not in said)


def synthesize(passages: list[str], generate_fn, rounds: int = 1, batch_size: int = 8,
               judge_fn=None, verify: bool = True) -> tuple[list[dict], dict]:
    """Make SCP pretraining rows from passages; return (rows, stats).

    rows: per passage, one "qa" row holding all its kept pairs (simple, complex and extra-round,
    the official layout) and one "paraphrase" row, each only if something survived.
    generate_fn(prompts) -> completions writes QA and paraphrases; judge_fn (default: generate_fn;
    the CLI passes the same model with 3 new tokens) answers the yes/no checks.
    """
    judge_fn = judge_fn or generate_fn
    keys = ("qa_parsed", "qa_incomplete", "qa_duplicate", "qa_judged", "qa_rejected", "qa_kept",
            "paraphrase_malformed", "paraphrase_judged", "paraphrase_rejected", "paraphrase_kept",
            "verdicts_unclear", "extra_round_prompts")
    stats = dict.fromkeys(keys, 0) | {"passages": len(passages)}
    pairs = [[] for _ in passages]  # kept (question, answer) pairs per passage
    asked = [set() for _ in passages]  # normalised questions seen per passage (kept or not)

    def add_qa(owners: list[int], outputs: list[str], desc: str):
        """Parse, deduplicate and verify QA generations; owners[i] is output i's passage index."""
        candidates = []  # (passage index, question, answer)
        for p, text in zip(owners, outputs):
            parsed, dropped = parse_qa(text)
            stats["qa_parsed"] += len(parsed)
            stats["qa_incomplete"] += dropped
            for q, a in parsed:
                key = " ".join(_normalise(q))
                if key in asked[p]:  # a 135M model repeats itself a lot
                    stats["qa_duplicate"] += 1
                    continue
                asked[p].add(key)
                candidates.append((p, q, a))
        keep = [True] * len(candidates)
        if verify and candidates:
            prompts = [VERIFY_QA.format(passage=passages[p], question=q, answer=a)
                       for p, q, a in candidates]
            keep = _judge(judge_fn, prompts, batch_size, desc, stats)
            stats["qa_judged"] += len(candidates)
            stats["qa_rejected"] += keep.count(False)
        for (p, q, a), ok in zip(candidates, keep):
            if ok:
                pairs[p].append((q, a))

    # Round 0: simple QA, complex QA and a paraphrase for every passage, in one batched pass.
    n = len(passages)
    prompts = [template.format(passage=p)
               for template in (SIMPLE_QA, COMPLEX_QA, PARAPHRASE) for p in passages]  # 3n prompts
    outputs = _run(generate_fn, prompts, batch_size, "generate")
    add_qa(list(range(n)) * 2, outputs[:2 * n], "verify QA")
    paraphrases = [clean_paraphrase(text) for text in outputs[2 * n:]]
    stats["paraphrase_malformed"] = paraphrases.count(None)
    todo = [i for i, text in enumerate(paraphrases) if text is not None]
    if verify and todo:
        prompts = [VERIFY_PARAPHRASE.format(passage=passages[i], paraphrase=paraphrases[i]) for i in todo]
        faithful = _judge(judge_fn, prompts, batch_size, "verify paraphrases", stats)
        stats["paraphrase_judged"], stats["paraphrase_rejected"] = len(todo), faithful.count(False)
        todo = [i for i, ok in zip(todo, faithful) if ok]

    # Rounds 1..R: ask again, naming the numbers and names that no kept pair mentions yet.
    for r in range(1, rounds + 1):
        missing = {i: _missing_terms(p, pairs[i]) for i, p in enumerate(passages)}
        owners = [i for i in range(n) if missing[i] or not pairs[i]]
        if not owners:
            break
        prompts = [MORE_QA.format(passage=passages[i], questions="\n".join(q for q, _ in pairs[i]) or "(none)",
                                  missing=", ".join(missing[i][:8]) or "its main points")
                   for i in owners]
        stats["extra_round_prompts"] += len(prompts)
        add_qa(owners, _run(generate_fn, prompts, batch_size, f"round {r}"), f"round {r} verify")

    rows = []
    for i, passage in enumerate(passages):
        if pairs[i]:
            rows.append({"data_type": "qa", "question": [q for q, _ in pairs[i]],
                         "answers": [a for _, a in pairs[i]], "docs": [passage]})
        if i in todo:  # parsed, and judged faithful (or not judged)
            rows.append({"data_type": "paraphrase", "question": "", "answers": [paraphrases[i]],
                         "docs": [passage]})
    stats["qa_kept"] = sum(len(p) for p in pairs)
    stats["paraphrase_kept"] = sum(row["data_type"] == "paraphrase" for row in rows)
    return rows, stats


# ------------------------------------------------------------------------------------- script

def print_summary(stats: dict, report: dict) -> None:
    rate = lambda bad, n: f"{bad}/{n} rejected ({bad / n:.0%})" if n else "not verified"  # noqa: E731
    print(f"scp summary | passages in {stats['passages']} | QA pairs out {stats['qa_kept']} | "
          f"paraphrases out {stats['paraphrase_kept']}")
    print(f"  QA: {stats['qa_parsed']} parsed, {stats['qa_incomplete']} incomplete dropped, "
          f"{stats['qa_duplicate']} duplicates, {rate(stats['qa_rejected'], stats['qa_judged'])}; "
          f"{stats['extra_round_prompts']} extra-round prompts")
    print(f"  paraphrases: {stats['paraphrase_malformed']} malformed, "
          f"{rate(stats['paraphrase_rejected'], stats['paraphrase_judged'])}; "
          f"judge verdicts neither yes nor no: {stats['verdicts_unclear']}")
    print(f"quality | mean answer support {report['mean_answer_support']:.2f} | answers fully in passage "
          f"{report['answers_fully_in_passage']:.2f} | mean paraphrase term retention "
          f"{report['mean_term_retention']:.2f}")


def main(argv: list[str] | None = None) -> tuple[list[dict], dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True,
                        help=".txt (one passage a line), .jsonl, or a datasets id")
    parser.add_argument("--out", required=True, help="pretraining JSONL to write")
    parser.add_argument("--backbone", default="smollm2-135m", help="any name clara.load_backbone takes")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N passages")
    parser.add_argument("--rounds", type=int, default=1, help="extra rounds for uncovered facts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--no-verify", action="store_true", help="keep every parseable pair and paraphrase")
    parser.add_argument("--split", default="train", help="split, for a datasets id")
    parser.add_argument("--text-field", default="text", help="column, for a datasets id")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's); 1 on a busy shared CPU")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.rounds < 0:
        parser.error("--batch-size and --max-new-tokens must be >= 1, --rounds >= 0")

    import torch
    import clara
    import data

    passages = [text for text, _ in data.read_passages(args.input, split=args.split,
                                                       text_field=args.text_field)][:args.limit]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if args.threads:  # on 2 cores shared with a training run, 2 threads were 23x slower than 1
        torch.set_num_threads(args.threads)
    why = "a GPU is available" if device == "cuda" else f"no GPU: CPU, torch threads {torch.get_num_threads()}"
    print(f"device {device}, dtype {dtype} ({why}); greedy decoding, so no seed; "
          f"{len(passages)} passages from {args.input}")
    start = time.time()
    model, tokenizer = clara.load_backbone(args.backbone, dtype=dtype)
    model.to(device)
    rows, stats = synthesize(passages, make_generate_fn(model, tokenizer, args.max_new_tokens),
                             rounds=args.rounds, batch_size=args.batch_size, verify=not args.no_verify,
                             judge_fn=make_generate_fn(model, tokenizer, max_new_tokens=3))
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    report = quality_report(rows)
    print_summary(stats, report)
    print(f"wrote {len(rows)} rows to {args.out} in {time.time() - start:.0f} s")
    if stats["qa_judged"] and not stats["qa_kept"]:
        print("note: the judge rejected every QA pair; small models answer 'no' to almost any check. "
              "Use a larger --backbone, or --no-verify.")
    return rows, stats


if __name__ == "__main__":
    main()
