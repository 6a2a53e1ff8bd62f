"""The second language of notebook 04: its words and the story translator."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from course_lib.corpus.story import Story


# -- the second language of notebook 04 -----------------------------------------------------

# A small invented language: the time comes first, the verb "went" last, an
# object before its verb, no articles. "alice went to the park to play
# football in the morning ." becomes "mane alice ad hortum pilam ludere ivit ."
SECOND_LANGUAGE = {
    # times
    "morning": "mane", "noon": "meridie", "afternoon": "postmeridie", "evening": "vespere", "night": "nocte",
    # places
    "cafe": "tabernam", "park": "hortum", "library": "bibliothecam", "beach": "litus", "cinema": "theatrum",
    "restaurant": "cenaculum", "gym": "palaestram", "market": "forum", "home": "domum",
    # verbs and their objects
    "eat": "edere", "drink": "bibere", "play": "ludere", "walk": "ducere", "have": "habere", "read": "legere",
    "study": "discere", "swim": "natare", "build": "aedificare", "watch": "spectare", "lift": "tollere",
    "buy": "emere", "meet": "videre",
    "breakfast": "ientaculum", "lunch": "prandium", "dinner": "cenam", "cake": "placentam",
    "coffee": "caffeam", "football": "pilam", "dog": "canem", "picnic": "epulas", "book": "librum",
    "history": "historiam", "sandcastle": "castellum", "sunset": "occasum", "stars": "stellas",
    "film": "fabulam", "weights": "pondera", "bread": "panem", "fruit": "poma",
    # people and pronouns
    "friend": "amicum", "sister": "sororem", "brother": "fratrem", "mother": "matrem", "father": "patrem",
    "cousin": "consobrinum", "she": "illa", "he": "ille", "her": "sua", "his": "suus",
    # the rest
    "happy": "laetus", "tired": "fessus", "hungry": "esuriens", "calm": "tranquillus", "sleepy": "somnolentus",
}
_DROPPED = {"to", "the", "a", "in", "at"}  # the second language has no articles or these prepositions


def translate(story: Story) -> tuple[str, ...]:
    """Rewrite ``story`` sentence by sentence in the second language.

    Order of a sentence: [time or "deinde"] subject ad place object verb ivit .
    The output is shorter than the input and its order differs, which is
    what an encoder-decoder with cross-attention is for.
    """
    out: list[str] = []
    for sentence in story.sentences:
        words = sentence.words
        if sentence.kind == "mood":      # she was happy .
            out += [SECOND_LANGUAGE[words[0]], SECOND_LANGUAGE[words[2]], "erat", "."]
        elif sentence.kind == "home":    # after that she went home .
            out += ["postea", SECOND_LANGUAGE[words[2]], "domum", "ivit", "."]
        else:                            # a visit: first sentence or "then ..."
            if sentence.kind == "first":
                out += [SECOND_LANGUAGE[sentence.time], words[0]]
            else:
                out += ["deinde", SECOND_LANGUAGE[words[1]]]
            verb, *objects = sentence.purpose
            out += ["ad", SECOND_LANGUAGE[sentence.place]]
            out += [SECOND_LANGUAGE.get(w, w) for w in objects if w not in _DROPPED]
            out += [SECOND_LANGUAGE[verb], "ivit", "."]
    return tuple(out)

