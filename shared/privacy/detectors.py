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
ORDER = ("secret", "card", "iban", "national_id", "email", "phone", "ip")  # who wins an overlap


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    detector: str


# -- e-mail -------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}"
                    r"[A-Za-z]{2,24}(?![\w-])")


def find_emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield m.span()


# -- payment cards ------------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# Issuer prefixes (IIN ranges) of the card networks: a Luhn-valid number outside them is an id, not a card.
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|6(?:011|5|4[4-9]|22)"
                          r"|35(?:2[89]|[3-8])|3(?:0[0-5]|[68])|62)")


def find_cards(text: str) -> Iterator[Span]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn.is_valid(digits):
            yield m.span()


# -- IBAN -----------------------------------------------------------------------------------------------

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")


def find_ibans(text: str) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        if iban.is_valid(m.group()):
            yield m.span()


# -- national IDs -------------------------------------------------------------------------------------

# Each scheme: the shape it is written in, and python-stdnum's module that checks it. Only shapes with
# structure (separators, letters, a check character): a bare run of digits is too often something else.
_NATIONAL_SHAPES = {
    "us.ssn": r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])",
    "es.dni": r"(?<![\w])\d{8}-?[A-Za-z](?!\w)",
    "it.codicefiscale": r"(?<![\w])[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z](?!\w)",
    "fr.nir": r"(?<![\d])[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\d)",
    "in.aadhaar": r"(?<![\d])[2-9]\d{3} \d{4} \d{4}(?![\d])",
}


@lru_cache(maxsize=8)
def _national_checks(schemes: tuple[str, ...]) -> tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...]:
    return tuple((re.compile(_NATIONAL_SHAPES[s]), importlib.import_module(f"stdnum.{s.replace('in.', 'in_.')}")
                  .is_valid) for s in schemes)


def national_id_finder(schemes: Sequence[str]) -> Callable[[str], Iterator[Span]]:
    checks = _national_checks(tuple(schemes))

    def find(text: str) -> Iterator[Span]:
        for shape, is_valid in checks:
            for m in shape.finditer(text):
                if is_valid(m.group()):
                    yield m.span()

    return find


# -- phone numbers ------------------------------------------------------------------------------------

_PHONE = re.compile(r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,5}"
                    r"(?![\w/]|[.-]\d)")


def phone_finder(region: str) -> Callable[[str], Iterator[Span]]:
    """Numbers valid in their numbering plan: with ``+`` any country's, without it ``region``'s."""

    def find(text: str) -> Iterator[Span]:
        for m in _PHONE.finditer(text):
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

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def find_ips(text: str) -> Iterator[Span]:
    if "." in text:
        for m in _IPV4.finditer(text):
            if _is_ip(m.group()):
                yield m.span()
    if "::" in text or text.count(":") >= 5:
        for m in _IPV6.finditer(text):
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
              "GitLabTokenDetector", "JwtTokenDetector", "MailchimpDetector", "OpenAIDetector", "PypiTokenDetector",
              "SendGridDetector", "SlackDetector", "SquareOAuthDetector", "StripeDetector", "TwilioKeyDetector"}
    patterns: list[re.Pattern[str]] = []
    plugin: Any
    for plugin in get_mapping_from_secret_type_to_class().values():
        if plugin.__name__ in wanted:
            patterns.extend(p for p in plugin().denylist if "{" in p.pattern or "+" in p.pattern)
    return patterns


_OWN_KEY_FORMATS = [
    r"sk-ant-[A-Za-z0-9_-]{20,200}",  # Anthropic
    r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}",  # OpenAI
    r"gw-[A-Za-z0-9_-]{30,100}",  # this gateway's own keys (and its operators')
    r"AIza[0-9A-Za-z_-]{35}",  # Google
    r"hf_[A-Za-z0-9]{30,60}",  # Hugging Face
    r"(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,100}",  # Stripe
    r"-----BEGIN [A-Z ]{0,30}PRIVATE KEY-----[\s\S]{0,8000}?-----END [A-Z ]{0,30}PRIVATE KEY-----",
]
_ASSIGNED = re.compile(r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|"
                       r"password|passwd|pwd|client[_-]?secret)[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"',;]{8,200})")
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{24,400}(?![A-Za-z0-9+/_=-])")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ENTROPY_BITS = 4.0  # Shannon bits per character from which a mixed token counts as random


class SecretFinder:
    def __init__(self) -> None:
        self.known = [*_detect_secrets_patterns(), *(re.compile(p) for p in _OWN_KEY_FORMATS)]

    def __call__(self, text: str) -> Iterator[Span]:
        for pattern in self.known:
            for m in pattern.finditer(text):
                yield m.span()
        for m in _ASSIGNED.finditer(text):
            yield m.span(1)
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

Finder = Callable[[str], Iterator[Span]]


def builtin_finders(phone_region: str, national_ids: Sequence[str]) -> dict[str, Finder]:
    """The built-in detectors by name, built once per process (the secret patterns compile here)."""
    return {"secret": SecretFinder(), "card": find_cards, "iban": find_ibans,
            "national_id": national_id_finder(national_ids), "email": find_emails,
            "phone": phone_finder(phone_region), "ip": find_ips}


def find_all(text: str, finders: Sequence[tuple[str, Finder]]) -> list[Finding]:
    """Every finding of ``finders`` (in priority order) in ``text``, without overlaps, by position."""
    taken: list[Finding] = []  # sorted by start, never overlapping
    starts: list[int] = []
    for name, find in finders:
        for start, end in find(text):
            at = bisect.bisect_left(starts, start)
            clear_before = at == 0 or taken[at - 1].end <= start
            clear_after = at == len(taken) or end <= taken[at].start
            if end > start and clear_before and clear_after:
                taken.insert(at, Finding(start, end, name))
                starts.insert(at, start)
    return taken
