"""A seeded, generated German->English corpus, for machines without gettext catalogs and
for timing the preparation on any number of pairs.

A small grammar over a real German lexicon with English glosses: noun phrases with
gender and case agreement, verb-second main clauses (an adverb first inverts subject and
verb), and verb-final subordinate clauses, so that a model has word order to learn and
not only word-for-word substitution. Generated names widen the vocabulary, so that
sentencepiece has real merges to learn on large samples.
"""
import random
from typing import Iterator, List, Tuple

# German noun, grammatical gender (m/f/n), English noun
NOUNS = [
    ("Hund", "m", "dog"), ("Katze", "f", "cat"), ("Kind", "n", "child"), ("Mann", "m", "man"),
    ("Frau", "f", "woman"), ("Haus", "n", "house"), ("Buch", "n", "book"), ("Lehrer", "m", "teacher"),
    ("Stadt", "f", "city"), ("Auto", "n", "car"), ("Vogel", "m", "bird"), ("Brief", "m", "letter"),
    ("Tisch", "m", "table"), ("Blume", "f", "flower"), ("Apfel", "m", "apple"), ("Zug", "m", "train"),
    ("Lampe", "f", "lamp"), ("Fenster", "n", "window"), ("Garten", "m", "garden"), ("Schule", "f", "school"),
]  # fmt: skip
ADJECTIVES = [
    ("alt", "old"), ("groß", "big"), ("klein", "small"), ("rot", "red"), ("schnell", "fast"),
    ("jung", "young"), ("neu", "new"), ("grün", "green"), ("schön", "beautiful"), ("leise", "quiet"),
]  # fmt: skip
# German third person singular, English third person singular
VERBS = [
    ("sieht", "sees"), ("kauft", "buys"), ("findet", "finds"), ("liest", "reads"), ("hat", "has"),
    ("mag", "likes"), ("sucht", "is looking for"), ("malt", "paints"), ("braucht", "needs"),
    ("vergisst", "forgets"), ("zeigt", "shows"), ("öffnet", "opens"),
]  # fmt: skip
ADVERBS = [("heute", "today"), ("oft", "often"), ("morgen", "tomorrow"), ("jetzt", "now"),
           ("manchmal", "sometimes"), ("wieder", "again")]  # fmt: skip
CONJUNCTIONS = [("weil", "because"), ("wenn", "when"), ("obwohl", "although"), ("bevor", "before")]

# (definite?, case) -> gender -> (article, adjective ending)
_DECLENSION = {
    (True, "nom"): {"m": ("der", "e"), "f": ("die", "e"), "n": ("das", "e")},
    (True, "acc"): {"m": ("den", "en"), "f": ("die", "e"), "n": ("das", "e")},
    (False, "nom"): {"m": ("ein", "er"), "f": ("eine", "e"), "n": ("ein", "es")},
    (False, "acc"): {"m": ("einen", "en"), "f": ("eine", "e"), "n": ("ein", "es")},
}
_NAME_SYLLABLES = ["ka", "li", "mo", "ra", "sen", "tu", "bel", "do", "fin", "ga", "ho", "jan",
                   "mar", "ne", "ol", "pi", "ru", "sa", "ti", "wen"]  # fmt: skip
NAMES_COUNT = 3000

Phrase = Tuple[List[str], List[str]]
"""(German words, English words)"""


class _Grammar:
    def __init__(self, seed: int):
        self.random = random.Random(seed)
        name_random = random.Random(seed + 1)
        self.names = sorted(
            {
                "".join(name_random.choice(_NAME_SYLLABLES) for _ in range(name_random.randint(2, 4))).title()
                for _ in range(NAMES_COUNT)
            }
        )

    def noun_phrase(self, case: str) -> Phrase:
        if self.random.random() < 0.2:
            name = self.random.choice(self.names)
            return [name], [name]
        german_noun, gender, english_noun = self.random.choice(NOUNS)
        definite = self.random.random() < 0.6
        article, ending = _DECLENSION[(definite, case)][gender]
        german, english = [article], ["the" if definite else "a"]
        if self.random.random() < 0.5:
            german_adjective, english_adjective = self.random.choice(ADJECTIVES)
            german.append(german_adjective + ending)
            english.append(english_adjective)
        german.append(german_noun)
        english.append(english_noun)
        if not definite and english[1][0] in "aeiou":
            english[0] = "an"
        return german, english

    def clause(self) -> Tuple[Phrase, Phrase, Tuple[str, str]]:
        return self.noun_phrase("nom"), self.noun_phrase("acc"), self.random.choice(VERBS)

    def main_clause(self) -> Phrase:
        (subject_de, subject_en), (object_de, object_en), (verb_de, verb_en) = self.clause()
        if self.random.random() < 0.3:
            adverb_de, adverb_en = self.random.choice(ADVERBS)
            return [adverb_de, verb_de, *subject_de, *object_de], [adverb_en, *subject_en, verb_en, *object_en]
        return [*subject_de, verb_de, *object_de], [*subject_en, verb_en, *object_en]

    def subordinate_clause(self) -> Phrase:
        (subject_de, subject_en), (object_de, object_en), (verb_de, verb_en) = self.clause()
        conjunction_de, conjunction_en = self.random.choice(CONJUNCTIONS)
        return [conjunction_de, *subject_de, *object_de, verb_de], [conjunction_en, *subject_en, verb_en, *object_en]

    def sentence(self) -> Tuple[str, str]:
        german, english = self.main_clause()
        if self.random.random() < 0.5:
            sub_de, sub_en = self.subordinate_clause()
            german, english = german + [","] + sub_de, english + [","] + sub_en
        german[0], english[0] = german[0][0].upper() + german[0][1:], english[0][0].upper() + english[0][1:]
        return " ".join(german).replace(" ,", ",") + ".", " ".join(english).replace(" ,", ",") + "."


def generate_pairs(count: int, seed: int) -> Iterator[Tuple[str, str]]:
    """Yield ``count`` (German, English) sentence pairs; the same seed, the same pairs."""
    grammar = _Grammar(seed)
    for _ in range(count):
        yield grammar.sentence()
