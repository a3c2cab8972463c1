"""Finding sensitive values in text: one detector per kind, each a cheap candidate regex and a check.

A regex alone flags every 16-digit order number as a card and every 9-digit id as a national ID, so
each candidate is confirmed by what defines the value: the Luhn check and an issuer prefix for cards
and the mod-97 check for IBANs (``python-stdnum``), the numbering plan for phones (``phonenumbers``),
each scheme's own checksum for national IDs (``python-stdnum``), ``ipaddress`` for IPs. Secrets are
the known key formats (``detect-secrets``' patterns, plus the providers' and this gateway's own), a
``key = value`` assignment, or a long token that mixes cases and digits at high entropy (hex digests
and UUIDs are ids, not secrets, and are left alone).

Every quantifier is bounded, so a hostile 4 MB prompt costs linear time. Spans never overlap: where
two detectors match the same characters the one earlier in ``ORDER`` wins.
"""

from __future__ import annotations

import bisect
import importlib
import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from stdnum import iban, luhn

Span = tuple[int, int]
ORDER = ("secret", "iban", "card", "national_id", "email", "ip", "phone")  # who wins an overlap
_DIGITS = re.compile(r"\d[\d .()+/:-]{0,40}")
_BEFORE, _AFTER = 12, 48  # context a digit cluster's window takes: the longest value's letters around its digits


class Scan:
    """One text being scanned, with where its numbers are. A regex tried at every position of a 10 kB
    prompt costs ~0.5 ms here, so the detectors of values that hold digits (all but e-mail and most
    secrets) look only at windows around the text's digit clusters, found in one pass."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._windows: list[Span] | None = None

    @property
    def windows(self) -> list[Span]:
        if self._windows is None:
            found = _DIGITS.finditer(self.text)
            self._windows = _merged((max(0, m.start() - _BEFORE), m.end() + _AFTER) for m in found)
        return self._windows

    def near_digits(self, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
        """``pattern``'s matches that lie in a window (lookarounds still see past the window's edges)."""
        for start, end in self.windows:
            yield from pattern.finditer(self.text, start, end)


def _merged(spans: Iterator[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in spans:
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    detector: str


# -- e-mail -------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}"
                    r"[A-Za-z]{2,24}(?![\w-])")


def find_emails(scan: Scan) -> Iterator[Span]:
    text = scan.text
    at = text.find("@")
    while at >= 0:
        m = _EMAIL.search(text, max(0, at - 64), at + 260)
        if m is not None and m.start() <= at < m.end():
            yield m.span()
            at = text.find("@", m.end())
        else:
            at = text.find("@", at + 1)


# -- payment cards ------------------------------------------------------------------------------------

_CARD = re.compile(r"\d(?<![\w+-]\d)(?:[ -]?\d){12,18}(?![\d-])")  # not glued to a word, or after +
# Issuer prefixes (IIN ranges) and lengths of the card networks: a Luhn-valid number outside them is an
# id, not a card (a 15-digit French NIR starting 2630 is not a Mastercard: those have 16 digits).
_NETWORKS = tuple((re.compile(prefix), lengths) for prefix, lengths in (
    (r"4", (13, 16, 19)),  # Visa
    (r"5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)", (16,)),  # Mastercard
    (r"3[47]", (15,)),  # American Express
    (r"6(?:011|5|4[4-9]|22)", (16, 17, 18, 19)),  # Discover
    (r"35(?:2[89]|[3-8])", (16, 17, 18, 19)),  # JCB
    (r"3(?:0[0-5]|[68])", (14, 15, 16, 17, 18, 19)),  # Diners Club
    (r"62", (16, 17, 18, 19)),  # UnionPay
))


def is_card_number(digits: str) -> bool:
    return any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _NETWORKS) \
        and luhn.is_valid(digits)


def find_cards(scan: Scan) -> Iterator[Span]:
    for m in scan.near_digits(_CARD):
        if is_card_number(re.sub(r"[ -]", "", m.group())):
            yield m.span()


# -- IBAN -----------------------------------------------------------------------------------------------

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")


def find_ibans(scan: Scan) -> Iterator[Span]:
    for m in scan.near_digits(_IBAN):
        if iban.is_valid(m.group()):
            yield m.span()


# -- national IDs -------------------------------------------------------------------------------------

# Each scheme: the shape it is written in, and python-stdnum's module that checks it. Only shapes with
# structure (separators, letters, a check character): a bare run of digits is too often something else.
_NATIONAL_SHAPES = {
    "us.ssn": r"\d(?<![\d-]\d)\d{2}-\d{2}-\d{4}(?![\d-])",
    "es.dni": r"\d(?<!\w\d)\d{7}-?[A-Za-z](?!\w)",
    "it.codicefiscale": r"[A-Za-z](?<!\w[A-Za-z])[A-Za-z]{5}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z](?!\w)",
    "fr.nir": r"[12](?<!\d[12]) ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\d)",
    "in.aadhaar": r"[2-9](?<!\d[2-9])\d{3} \d{4} \d{4}(?!\d)",
}


@lru_cache(maxsize=8)
def _national_checks(schemes: tuple[str, ...]) -> tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...]:
    return tuple((re.compile(_NATIONAL_SHAPES[s]), importlib.import_module(f"stdnum.{s.replace('in.', 'in_.')}")
                  .is_valid) for s in schemes)


def national_id_finder(schemes: Sequence[str]) -> Callable[[Scan], Iterator[Span]]:
    checks = _national_checks(tuple(schemes))

    def find(scan: Scan) -> Iterator[Span]:
        for shape, is_valid in checks:
            for m in scan.near_digits(shape):
                if is_valid(m.group()):
                    yield m.span()

    return find


# -- phone numbers ------------------------------------------------------------------------------------

_PHONE = re.compile(r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,5}"
                    r"(?![\w/]|[.-]\d)")


def phone_finder(region: str) -> Callable[[Scan], Iterator[Span]]:
    """Numbers valid in their numbering plan: with ``+`` any country's, without it ``region``'s."""

    def find(scan: Scan) -> Iterator[Span]:
        for m in scan.near_digits(_PHONE):
            candidate = m.group()
            digits = sum(c.isdigit() for c in candidate)
            if 7 <= digits <= 15 and _is_phone(candidate, region):
                yield m.span()

    return find


@lru_cache(maxsize=4096)
def _is_phone(candidate: str, region: str) -> bool:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", candidate):  # an ISO date is never a phone number
        return False
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


# -- IP addresses -------------------------------------------------------------------------------------

_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def find_ips(scan: Scan) -> Iterator[Span]:
    text = scan.text
    if "." in text:
        for m in scan.near_digits(_IPV4):
            if _is_ip(m.group()):
                yield m.span()
    if "::" in text or text.count(":") >= 5:
        for m in scan.near_digits(_IPV6):
            if m.group().count(":") >= 2 and _is_ip(m.group()):
                yield m.span()


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


# -- secrets ------------------------------------------------------------------------------------------

def _detect_secrets_patterns() -> list[re.Pattern[str]]:
    """The key formats ``detect-secrets`` knows by their prefix (its keyword, entropy and IP plugins are
    replaced by the rules below, which look at the value the way a prompt carries it)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    wanted = {"AWSKeyDetector", "AzureStorageKeyDetector", "DiscordBotTokenDetector", "GitHubTokenDetector",
              "GitLabTokenDetector", "JwtTokenDetector", "OpenAIDetector", "PypiTokenDetector",
              "SendGridDetector", "SlackDetector", "SquareOAuthDetector", "StripeDetector", "TwilioKeyDetector"}
    patterns: list[re.Pattern[str]] = []
    plugin: Any
    for plugin in get_mapping_from_secret_type_to_class().values():
        if plugin.__name__ in wanted:
            patterns.extend(p for p in plugin().denylist if "{" in p.pattern or "+" in p.pattern)
    return patterns


_OWN_KEY_FORMATS = [
    r"eyJ[A-Za-z0-9_-]{8,2000}\.[A-Za-z0-9_-]{8,2000}\.[A-Za-z0-9_-]{8,2000}",  # a whole JWT, signature included
    r"sk-ant-[A-Za-z0-9_-]{20,200}",  # Anthropic
    r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}",  # OpenAI
    r"gw-[A-Za-z0-9_-]{30,100}",  # this gateway's own keys (and its operators')
    r"AIza[0-9A-Za-z_-]{35}",  # Google
    r"hf_[A-Za-z0-9]{30,60}",  # Hugging Face
    r"[srp]k_(?:live|test)_[0-9A-Za-z]{16,100}",  # Stripe
    r"-----BEGIN [A-Z ]{0,30}PRIVATE KEY-----[\s\S]{0,8000}?-----END [A-Z ]{0,30}PRIVATE KEY-----",
]
_ASSIGNED = re.compile(r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|"
                       r"password|passwd|pwd|client[_-]?secret)[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"',;]{8,200})")
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{24,400}(?![A-Za-z0-9+/_=-])")
_SECRET_WORDS = ("key", "secret", "token", "passw", "pwd")  # what ``_ASSIGNED`` needs, checked first
LONG_WORD = 24
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ENTROPY_BITS = 4.0  # Shannon bits per character from which a mixed token counts as random


class SecretFinder:
    def __init__(self) -> None:
        self.known = [*(re.compile(p) for p in _OWN_KEY_FORMATS), *_detect_secrets_patterns()]

    def __call__(self, scan: Scan) -> Iterator[Span]:
        text = scan.text
        for pattern in self.known:
            for m in pattern.finditer(text):
                yield m.span()
        lowered = text.lower()
        if any(word in lowered for word in _SECRET_WORDS):
            for m in _ASSIGNED.finditer(text):
                yield m.span(1)
        if any(len(word) >= LONG_WORD for word in text.split()):
            for m in _TOKEN.finditer(text):
                if looks_random(m.group()):
                    yield m.span()


def looks_random(token: str) -> bool:
    """Upper and lower case and digits, at high entropy: an API key, not a word, a hex digest or a UUID."""
    if _UUID.fullmatch(token) or not (any(c.isupper() for c in token) and any(c.islower() for c in token)
                                      and any(c.isdigit() for c in token)):
        return False
    return shannon_bits(token) >= ENTROPY_BITS


def shannon_bits(text: str) -> float:
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


# -- all of them --------------------------------------------------------------------------------------

Finder = Callable[[Scan], Iterator[Span]]


def builtin_finders(phone_region: str, national_ids: Sequence[str]) -> dict[str, Finder]:
    """The built-in detectors by name, built once per process (the secret patterns compile here)."""
    return {"secret": SecretFinder(), "card": find_cards, "iban": find_ibans,
            "national_id": national_id_finder(national_ids), "email": find_emails,
            "phone": phone_finder(phone_region), "ip": find_ips}


def find_all(text: str, finders: Sequence[tuple[str, Finder]]) -> list[Finding]:
    """Every finding of ``finders`` (in priority order) in ``text``, without overlaps, by position."""
    taken: list[Finding] = []  # sorted by start, never overlapping
    starts: list[int] = []
    scan = Scan(text)
    for name, find in finders:
        for start, end in find(scan):
            at = bisect.bisect_left(starts, start)
            clear_before = at == 0 or taken[at - 1].end <= start
            clear_after = at == len(taken) or end <= taken[at].start
            if end > start and clear_before and clear_after:
                taken.insert(at, Finding(start, end, name))
                starts.insert(at, start)
    return taken
