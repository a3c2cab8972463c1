"""The near-miss guard: may a cached answer to one question serve another that embeds close to it?

Embeddings put "convert 100 USD to EUR" next to "convert 200 USD to EUR", "flights from Paris to
London" next to "from London to Paris", "is it safe" next to "is it not safe": a similarity threshold
alone serves the wrong answer. A wrong cached answer is worse than a paid call, so a semantic hit must
also pass every check below, each blind to the wording the paraphrases change (politeness, filler,
word order, inflection, synonyms, typos):

- numbers, dates and times (digits, number words, ordinals, months, weekdays, relative days) are equal;
- negations are equal (not, n't, never, without, except, ...);
- the content words match one to one, after stop words, a light stemmer and a synonym table; a word
  may match a misspelling of itself only when the misspelling is no word of its own (the tokenizer
  splits it) and neither is a name (capitalised), so "bear" never matches "beer" nor "Austria"
  "Australia". An added constraint, another entity, product, plan, language or customer leaves a
  word unmatched;
- when the two hold the same words in another order, the words after directional cues (from, to,
  than, into, vs, before, after, ...) are the same: "A to B" is not "B to A".

``near_miss`` returns the first check that fails (a reason, for logs and the evaluation set) or None.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from shared.tokens import _load_encoding

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?(?:[.,:/-][a-z0-9]+)*|[^\sa-z0-9]", re.I)

def _words(text: str) -> list[str]:
    return text.split()


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"))} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9", "dozen": "12", "half": "0.5",
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th", "last": "last",
    "once": "1x", "twice": "2x", "double": "2x", "triple": "3x", "single": "1x", "both": "2", "couple": "2",
    "several": "several", "few": "few", "many": "many", "all": "all", "every": "all", "each": "all", "any": "any",
    "more": "more", "less": "less", "fewer": "less", "most": "most", "least": "least", "minimum": "min",
    "maximum": "max", "min": "min", "max": "max", "under": "<", "over": ">", "above": ">", "below": "<",
}
_TIME_WORDS = set(_words(
    "today tomorrow yesterday tonight now morning afternoon evening night noon midnight weekend week month year "
    "day days hour hours minute minutes second seconds daily weekly monthly yearly annual annually quarterly "
    "monday tuesday wednesday thursday friday saturday sunday january february march april june july "
    "august september october november december jan feb mar apr jun jul aug sep sept oct nov dec am pm "
    "spring summer autumn fall winter next previous past ago recent recently latest earliest early late "
    "before after since until current"))
_NEGATIONS = {"not": "not", "no": "not", "never": "not", "none": "not", "nobody": "not", "nothing": "not",
              "neither": "not", "nor": "not", "without": "without", "except": "except", "excluding": "except",
              "exclude": "except", "cannot": "not", "cant": "not", "unable": "not", "avoid": "avoid",
              "stop": "stop", "non": "not", "lack": "not", "instead": "instead", "rather": "instead",
              "unless": "unless", "nowhere": "not", "hardly": "not", "against": "against", "vs": "versus",
              "versus": "versus", "only": "only", "but": "but"}
_STOP = set(_words(
    "a an the of in on at for with by about as is are was were be been being do does did doing have has had "
    "having i me my mine myself we us our you your yours he she it its they them their this that these those "
    "there here what which who whom whose when where why how whether if then so and or also just really "
    "actually basically please kindly could would can will shall should might must may wondering wonder "
    "tell know explain describe show give let help quick quickly question hi hello hey thanks thank thx pls plz "
    "want wanted need needed like like'd d ll m re s t ve 'd 'll 'm 're 's 've ok okay any some much "
    "anyone someone somebody possible possibly way ways exactly briefly simple simply some one's get got "
    "to from into onto than lot lots bunch advance"))
_DIRECTIONAL = ("from", "to", "into", "onto", "than", "vs", "versus", "before", "after", "over", "toward",
                "towards", "between", "and", "or", "then", "per", "instead", "rather", "against")
# Words callers use for the same thing (each group maps to its first word); deliberately small:
# a pair that differs in what matters must never meet here.
_SYNONYMS = [
    "buy purchase", "big large huge", "small little tiny", "fast quick rapid speedy", "begin start commence",
    "end finish complete", "make create build generate produce", "fix repair resolve solve",
    "error bug issue problem exception", "cancel terminate", "change modify alter update edit",
    "delete remove erase", "use utilize employ", "find locate", "pick choose select", "cost price",
    "cheap inexpensive affordable", "expensive costly pricey", "benefit advantage upside",
    "drawback disadvantage downside", "summarize summarise summary recap", "write compose draft",
    "car automobile vehicle", "job position role", "home house", "picture image photo", "movie film",
    "doctor physician", "sick ill", "happy glad", "answer reply response", "password passcode",
    "account profile", "subscription membership", "email e-mail", "refund reimbursement",
    "shipping delivery", "boss manager supervisor", "customer client", "fridge refrigerator",
    "tv television", "phone smartphone cellphone", "laptop notebook", "website site webpage",
    "app application", "color colour", "center centre", "organize organise", "optimize optimise",
    "analyze analyse", "meaning definition", "calculate compute", "improve enhance", "kid child children",
    "function method", "install setup", "example sample instance", "idea suggestion tip", "story tale",
    "quickest fastest", "simple easy", "difference different differ", "city town", "reason cause",
]
_LEXICON = tuple(sorted(set(_NUMBER_WORDS) | _TIME_WORDS | set(_NEGATIONS)))
_SYNONYM_OF = {word: group.split()[0] for group in _SYNONYMS for word in group.split()}
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "es", "ed", "ly", "s")


@dataclass(frozen=True)
class Reading:
    """What the guard reads from one question."""

    digits: tuple[str, ...]  # numbers written in digits, in order ("15% of 80" is not "80% of 15")
    quantities: Counter[str]  # number words, ordinals, dates and times
    negations: Counter[str]
    words: tuple[tuple[str, str, bool], ...]  # content words in order: (normal form, as written, is a name)
    cues: tuple[tuple[str, str], ...]  # (directional cue, the term after it)


def near_miss(query: str, cached: str) -> str | None:
    """Why ``cached``'s answer may not serve ``query`` (see the module docstring), or None."""
    a, b = read(query), read(cached)
    if a.digits != b.digits or a.quantities != b.quantities:
        return "number"
    if a.negations != b.negations:
        return "negation"
    if not _words_match(a.words, b.words):
        return "words"
    if _swapped(a, b):
        return "direction"
    return None


@lru_cache(maxsize=2048)
def read(text: str) -> Reading:
    """What the guard compares in one question (a lookup's question and its candidates' recur)."""
    digits: list[str] = []
    quantities: Counter[str] = Counter()
    negations: Counter[str] = Counter()
    words: list[tuple[str, str, bool]] = []
    cues: list[tuple[str, str]] = []
    pending: str | None = None
    tokens = _WORD.findall(text)
    for index, token in enumerate(tokens):
        lower = token.lower().replace("’", "'")
        base = _spelled(lower.split("'")[0]) if not lower.endswith("n't") else lower
        if lower[:1].isdigit():
            term = _number(lower)
            digits.append(term)
        elif base in _NUMBER_WORDS or base in _TIME_WORDS:
            term = _NUMBER_WORDS.get(base, base)
            quantities[term] += 1
        elif lower.endswith("n't") or base in _NEGATIONS:
            negations[_NEGATIONS.get(base, "not")] += 1
            continue
        elif base in _DIRECTIONAL:
            pending = base
            continue
        elif base in _STOP or not base or not base[0].isalnum():
            continue
        else:
            name = (token[0].isupper() and not _sentence_start(tokens, index)) or (token.isupper() and len(token) > 1)
            term = _normal(base)
            words.append((term, base, name))
        if pending is not None:
            cues.append((pending, term))
            pending = None
    return Reading(tuple(digits), quantities, negations, tuple(words), tuple(cues))


def _swapped(a: Reading, b: Reading) -> bool:
    """The same terms in another order around a directional cue, or one term after different cues."""
    after_a, after_b = _cued(a), _cued(b)
    if any(after_a[t] != after_b[t] for t in after_a.keys() & after_b.keys()):
        return True
    order_a, order_b = [w for w, _, _ in a.words], [w for w, _, _ in b.words]
    return order_a != order_b and bool(a.cues or b.cues) and a.cues != b.cues and len(a.cues) == len(b.cues)


def _cued(reading: Reading) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cue, term in reading.cues:
        out.setdefault(term, set()).add(cue)
    return out


@lru_cache(maxsize=8192)
def _spelled(word: str) -> str:
    """A misspelt number, date, time or negation word as that word ("tomorow", "Ferbuary"); else ``word``."""
    if len(word) < 5 or word in _LEXICON or _is_word(word):
        return word
    return next((known for known in _LEXICON if len(known) >= 5 and _distance(word, known) <= 1
                 + (len(known) >= 8)), word)


def _sentence_start(tokens: list[str], index: int) -> bool:
    return index == 0 or tokens[index - 1] in (".", "?", "!", ":", "\"", "'", "(")


def _number(token: str) -> str:
    """Digits without thousands separators or trailing zeros: "1,000" is "1000", "2.50" is "2.5"."""
    text = token.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", token) else token
    if re.fullmatch(r"\d+\.\d+", text):
        text = text.rstrip("0").rstrip(".")
    return text


def _normal(word: str) -> str:
    """A word's stem, then its synonym group's first word."""
    if word in _SYNONYM_OF:
        return _SYNONYM_OF[word]
    stem = _stem(word)
    return _SYNONYM_OF.get(stem, stem)


def _stem(word: str) -> str:
    if len(word) <= 4:
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                return base + "y"
            if suffix in ("ing", "ed", "ings") and len(base) > 2 and base[-1] == base[-2]:
                return base[:-1]  # running -> run
            return base
    return word


def _words_match(a: tuple[tuple[str, str, bool], ...], b: tuple[tuple[str, str, bool], ...]) -> bool:
    """Every content word of each has its own partner in the other: equal, or one a typo of the other."""
    left = Counter(w for w, _, _ in a)
    right = Counter(w for w, _, _ in b)
    common = left & right
    only_left = left - common
    only_right = right - common
    if not only_left and not only_right:
        return True
    if sum(only_left.values()) != sum(only_right.values()):
        return False
    names = {raw for _, raw, name in (*a, *b) if name}
    spelled = {w: raw for w, raw, _ in (*a, *b)}
    rest = list(only_right.elements())
    for word in only_left.elements():
        partner = next((o for o in rest if _typo_pair(spelled[word], spelled[o], names)), None)
        if partner is None:
            return False
        rest.remove(partner)
    return True


def _typo_pair(a: str, b: str, names: set[str]) -> bool:
    """One is a misspelling of the other: close, not a name, and at least one is no word of its own."""
    if a in names or b in names or min(len(a), len(b)) < 5:
        return False
    if _is_word(a) and _is_word(b):
        return False
    return _distance(a, b) <= (1 if max(len(a), len(b)) < 8 else 2)


@lru_cache(maxsize=8192)
def _is_word(word: str) -> bool:
    """A word the tokenizer knows whole (one token): a real word, not a misspelling."""
    encoding = _load_encoding()
    return encoding is None or len(encoding.encode(" " + word)) == 1


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance: a swap of two letters is one edit."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]
