"""Answers that say nothing: every sentence is a pleasantry (an apology, an offer to help, a self-introduction).

Small chat models under a persona's system message often answer a question with courtesy alone:
"I'm sorry for your loss. I'm here to help you with any questions you have." or "We're a travel agency,
and we're happy to assist you with your online check-in." Trained on, such answers teach the model to
evade (it then writes them instead of a refusal, or instead of answering); checked, they are not on topic.
A persona's self-introduction by name ("I'm Marina, the Harbourview Hotel's receptionist.", "I'm Marina and I'll be
happy to help.") is one too: under a system message that names it, SmolLM2 introduces itself instead of answering.
A sentence is a pleasantry when each of its clauses (split at a colon, semicolon, dash or ", and|but|so") *opens*
with one of the forms below (after one word and a comma, as in "Marina, welcome to the hotel." or "Absolutely, I'd
be happy to help.": under a persona's system message SmolLM2 often addresses the user by the persona's name), so "I'm sorry to hear your flight was cancelled. You can rebook online.", "Sorry for
the trouble: the second charge is a pending authorization." and "I'm a hosting company, and I accept PayPal." hold
an answer and are not non-answers. The fill also trims the courtesy sentences an answer opens with
(:func:`without_leading_courtesy`): trained on, "I'm sorry for any confusion." before every answer becomes the
model's first sentence everywhere.
A message that is itself only pleasantries ("Thanks, that's all!") may be answered with one ("You're welcome!").
"""

from __future__ import annotations

import re

from behavio.kinds._text import normalize, sentence_ends, sentences

_WE = r"(?:i'm|i am|we're|we are)"
_OPENINGS = (
    _WE + r" (?:so |very |truly |really |deeply )?sorry\b", r"(?:so |very |truly |really )?sorry\b",
    r"(?:my|our) (?:sincere |deepest )?apologies\b", r"apologies\b", r"(?:i|we) apologi[sz]e\b",
    r"(?:i|we) (?:completely |totally |fully )?(?:understand|can understand|can see|can imagine|hear you|appreciate)\b",
    _WE + r" (?:always |more than |very |so |really |just )?(?:here|happy|glad|delighted|pleased|ready|excited|eager)"
          r" to (?:help|assist|support|be of|hear)\b",
    _WE + r" (?:always |just )?here (?:for you|if you need)\b",
    r"(?:i'd|i would|we'd|we would) (?:be )?(?:more than |very |so |really )?(?:happy|glad|delighted|pleased) to"
    r" (?:help|assist)\b",
    _WE + r" (?:so |very |really |truly )?(?:glad|happy|delighted|pleased|thrilled) (?:that )?(?:you're|you are)"
          r" (?:enjoying|here|interested|looking|considering|planning|thinking|staying|visiting)\b",
    r"(?:how|what) (?:can|may|could) (?:i|we) (?:help|assist|do)\b",
    r"(?:i|we)(?: can| could| will|'ll) (?:certainly |definitely |gladly )?(?:help|assist)(?: you)?"
    r"(?: with (?:that|this|it))?[.!]?$",  # the whole clause: "..., but I can help you with that."
    r"(?:please )?(?:feel free|don't hesitate|do not hesitate|let me know|let us know)\b",
    r"(?:is there )?anything else\b",
    r"if you (?:have|need) (?:any )?(?:[\w-]+ )?(?:questions?|help|assistance|concerns)\b",
    r"(?:can|could|would) you (?:please )?(?:provide|share|tell me|give me|clarify|specify|let me know)\b",
    r"please (?:provide|share|tell me|clarify|specify)\b",
    _WE + r" (?:a|an|your|the) [\w' -]{0,40}?"
          r"(?:agent|assistant|company|shop|service|agency|team|bot|specialist|expert|store|business)\b",
    r"(?:i'm|i am|my name is) (?!not\b|sure\b|afraid\b)[\w']+(?:, (?:the|a|an|your)\b| and i\b| from\b| here\b|[.!]?$)",
    r"(?:thank you|thanks|you're welcome|you are welcome)\b", r"(?:hi|hello|hey|greetings|welcome)\b",
    r"(?:have|enjoy) (?:a|your) (?:nice|great|good|wonderful|lovely) (?:day|trip|evening|one)\b",
    r"(?:that's|what) an? (?:\w+ ){0,2}question\b", r"(?:great|good|excellent) question\b",
)
_PLEASANTRY = re.compile(r"^(?:[\w']+, )?(?:" + "|".join(_OPENINGS) + r")")  # "Marina, welcome to ...": a name first
_LIST_MARKER = re.compile(r"^[ \t]*(?:\d+[.)]|[-*\u2022])[ \t]+", re.MULTILINE)  # "1. ", "2) ", "- ", "* " opening a line
_CLAUSE_BREAK = re.compile(r"[:;]\s|\s[\u2014\u2013-]\s|,\s+(?:and|but|so)\s")


def is_pleasantry(sentence: str) -> bool:
    """Whether every clause of ``sentence`` opens with a courtesy form (an apology, an offer of help, a greeting)."""
    clauses = [c for c in _CLAUSE_BREAK.split(normalize(sentence)) if c.strip()]
    return bool(clauses) and all(_PLEASANTRY.match(c.lstrip("\"'(*-\u2014 ")) for c in clauses)


def only_pleasantries(text: str) -> bool:
    """Whether ``text`` has at least one sentence and every one of them is a pleasantry; list items count as the
    sentences they hold ("1. I'm sorry for your loss.\n2. I'm here to help you with your laptop." says nothing)."""
    found = sentences(_LIST_MARKER.sub("", text))
    return bool(found) and all(is_pleasantry(s) for s in found)


def without_leading_courtesy(text: str) -> str:
    """``text`` without the pleasantries it opens with, when an answer follows them ("I'm sorry for any confusion.
    You can pay by card." -> "You can pay by card."); unchanged when it is all pleasantries or opens with none."""
    ends = sentence_ends(text)
    start = 0
    for end in ends:
        if not is_pleasantry(text[start:end]):
            return text[start:].strip()
        start = end
    return text


def non_answer(prompt: str, response: str) -> bool:
    """Whether ``response`` answers ``prompt`` with courtesy alone (a prompt of courtesy alone may be so answered)."""
    return only_pleasantries(response) and not only_pleasantries(prompt)
