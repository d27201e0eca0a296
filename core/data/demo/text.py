"""Seeded story text for the demo brain: a vocabulary with real semantic structure, topic drift.

A story is a sequence of *scenes*; each scene has a topic (kitchen, farm, sea, …) and a
protagonist, and its sentences draw their content words mostly from that topic, so semantic
content drifts slowly within a story (a scene lasts several sentences, ~10–25 s of speech).
Words are plain lower-case alphabetic tokens that espeak-ng speaks as exactly one word each
(no digits, hyphens or apostrophes).
"""

from __future__ import annotations

import numpy as np

#: topic → slot → words. Slots: P people, L places, T countable things, M mass nouns,
#: V transitive verbs (past), I intransitive verbs (past), A adjectives.
TOPICS: dict = {
    "kitchen": dict(
        P="cook baker grandmother waiter chef".split(),
        L="kitchen bakery restaurant cellar".split(),
        T="apple onion knife oven pot plate spoon cake pie potato".split(),
        M="bread soup cheese butter honey sugar milk rice".split(),
        V="cooked baked tasted stirred poured chopped ate served".split(),
        I="cooked ate tasted".split(),
        A="hot sweet salty fresh warm delicious".split()),
    "farm": dict(
        P="farmer shepherd milkmaid".split(),
        L="farm barn field meadow stable".split(),
        T="cow horse sheep goat pig chicken tractor fence".split(),
        M="hay wheat corn grass mud".split(),
        V="fed milked planted harvested chased ploughed".split(),
        I="planted harvested grazed".split(),
        A="muddy green quiet rural".split()),
    "sea": dict(
        P="sailor fisherman captain diver".split(),
        L="harbor beach island ocean ship".split(),
        T="boat wave fish whale shark net sail anchor".split(),
        M="water salt sand seaweed".split(),
        V="sailed caught pulled dragged".split(),
        I="sailed swam floated drifted".split(),
        A="salty stormy blue wet deep".split()),
    "city": dict(
        P="driver officer lawyer clerk stranger".split(),
        L="street office station subway city".split(),
        T="car bus train taxi ticket phone building".split(),
        M="traffic noise smoke concrete".split(),
        V="drove parked missed called".split(),
        I="waited rushed hurried commuted".split(),
        A="busy loud crowded expensive modern".split()),
    "school": dict(
        P="teacher student principal tutor".split(),
        L="school classroom library college".split(),
        T="book pencil lesson exam desk notebook chalkboard".split(),
        M="homework history math science".split(),
        V="read wrote studied taught graded".split(),
        I="studied learned graduated".split(),
        A="clever boring difficult curious".split()),
    "hospital": dict(
        P="doctor nurse patient surgeon".split(),
        L="hospital clinic pharmacy ward".split(),
        T="heart arm leg bone bandage pill needle".split(),
        M="blood medicine fever pain".split(),
        V="healed examined treated injected".split(),
        I="bled fainted coughed recovered".split(),
        A="sick painful weak healthy pale".split()),
    "forest": dict(
        P="hunter ranger hermit".split(),
        L="forest mountain river cave valley".split(),
        T="wolf bear deer fox owl snake tree rock".split(),
        M="snow moss firewood fog".split(),
        V="hunted tracked climbed followed".split(),
        I="wandered hid camped howled".split(),
        A="dark cold wild tall ancient".split()),
    "music": dict(
        P="singer drummer musician pianist".split(),
        L="concert theater stage club".split(),
        T="guitar piano drum song violin trumpet".split(),
        M="music rhythm jazz applause".split(),
        V="sang played tuned composed".split(),
        I="sang danced listened performed".split(),
        A="loud beautiful slow melodic".split()),
    "war": dict(
        P="soldier general enemy spy".split(),
        L="camp border fortress trench".split(),
        T="gun tank bomb flag helmet rifle".split(),
        M="gunfire ammunition smoke".split(),
        V="attacked captured defended bombed".split(),
        I="fought marched surrendered retreated".split(),
        A="brave dangerous wounded violent".split()),
    "family": dict(
        P="mother father sister brother baby uncle aunt".split(),
        L="house garden bedroom porch".split(),
        T="birthday gift photograph letter wedding blanket".split(),
        M="love laughter dinner".split(),
        V="hugged kissed visited married".split(),
        I="laughed cried smiled slept".split(),
        A="happy lonely proud gentle".split()),
    "sports": dict(
        P="coach player runner referee".split(),
        L="stadium gym court track".split(),
        T="ball goal team race medal whistle".split(),
        M="sweat training football".split(),
        V="kicked threw caught won".split(),
        I="ran jumped scored trained".split(),
        A="fast strong tired athletic".split()),
    "travel": dict(
        P="pilot traveler tourist guide".split(),
        L="airport desert road village hotel".split(),
        T="plane suitcase map passport camera".split(),
        M="luggage sunshine rain wind".split(),
        V="packed carried booked photographed".split(),
        I="flew traveled arrived departed".split(),
        A="sunny windy distant foreign".split()),
    "market": dict(
        P="merchant banker shopkeeper thief".split(),
        L="shop market bank warehouse".split(),
        T="coin dollar price jewel basket wallet".split(),
        M="gold silver cash cloth".split(),
        V="sold bought counted stole".split(),
        I="bargained paid haggled".split(),
        A="rich poor cheap valuable".split()),
}

EMOTIONS = "afraid angry happy sad nervous excited calm jealous surprised grateful ashamed".split()
NUMBERS = "two three four five six seven eight nine ten twelve twenty hundred".split()
MOTION = "walked ran hurried returned went drove".split()
PRONOUNS = "he she we they i".split()

#: words that carry no topic (excluded from the semantic driver's context window)
FUNCTION_WORDS = frozenset(
    "the a my his her our their to inside near with and was were saw some when because after "
    "that then felt said remember everyone nobody at very".split()) | frozenset(PRONOUNS)

_IRREGULAR_PLURAL = {"sheep": "sheep", "fish": "fish", "deer": "deer", "knife": "knives",
                     "wolf": "wolves", "potato": "potatoes", "baby": "babies",
                     "person": "people", "man": "men", "woman": "women"}

# espeak-ng speaks some word pairs as one word event ("in the", "with the", "there were", "on the",
# "of the"); the templates avoid them so every word gets its own timing.
# Templates: each token is a literal word or a slot. Slots: P person, PP the scene protagonist,
# L place, T thing, TP plural thing, M mass noun, V transitive verb, I intransitive verb,
# A adjective, E emotion, N number, G motion verb, S subject pronoun.
TEMPLATES = [
    "the A P V the T at the L",
    "my P V N TP near the L",
    "S felt E when the PP V the T",
    "S G to the L with my A P",
    "the PP was E because the T was A",
    "we saw N A TP inside the L",
    "S V some M and I",
    "the L was A and the PP felt E",
    "after the P V the T everyone I",
    "i remember the A T that my P V",
    "nobody V the M at the L",
    "the PP said the T was very A",
    "then the PP I near the A L",
    "S V the A M with N TP",
    "the A PP G to the L and I",
]


def plural(noun: str) -> str:
    """English plural of a countable noun (regular rules plus a few irregular forms)."""
    if noun in _IRREGULAR_PLURAL:
        return _IRREGULAR_PLURAL[noun]
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def vocabulary() -> list:
    """Every word the generator can emit, sorted (lower-case, alphabetic)."""
    words = set(FUNCTION_WORDS) | set(EMOTIONS) | set(NUMBERS) | set(MOTION)
    for slots in TOPICS.values():
        for slot, items in slots.items():
            words.update(items)
            if slot == "T":
                words.update(plural(t) for t in items)
    for tpl in TEMPLATES:
        words.update(tok for tok in tpl.split() if tok.islower())
    return sorted(words)


def is_content(word: str) -> bool:
    """True for words that carry semantic content (the semantic driver's context)."""
    return word not in FUNCTION_WORDS


class _Scene:
    def __init__(self, topic: str, rng: np.random.Generator):
        self.topic = topic
        self.protagonist = str(rng.choice(TOPICS[topic]["P"]))


def _fill(slot: str, scene: _Scene, rng: np.random.Generator, p_topic: float) -> str:
    if slot == "PP":
        return scene.protagonist
    if slot == "E":
        return str(rng.choice(EMOTIONS))
    if slot == "N":
        return str(rng.choice(NUMBERS))
    if slot == "G":
        return str(rng.choice(MOTION))
    if slot == "S":
        return str(rng.choice(PRONOUNS))
    topic = scene.topic
    if rng.random() > p_topic:  # an off-topic word now and then
        topic = str(rng.choice(sorted(TOPICS)))
    if slot == "TP":
        return plural(str(rng.choice(TOPICS[topic]["T"])))
    return str(rng.choice(TOPICS[topic][slot]))


def sentence(scene: _Scene, rng: np.random.Generator, p_topic: float = 0.85) -> list:
    """One sentence as a list of lower-case words."""
    tpl = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return [tok if tok.islower() else _fill(tok, scene, rng, p_topic) for tok in tpl.split()]


def story_sentences(rng: np.random.Generator, n_sentences_max: int = 400,
                    scene_sentences: tuple = (3, 6), p_home: float = 0.4):
    """Yield ``(topic, words)`` sentences of one story, with topic drift.

    The story has a home topic; each scene lasts ``scene_sentences`` (inclusive range) sentences
    and then moves to the home topic with probability ``p_home`` or to another random topic.
    """
    names = sorted(TOPICS)
    home = str(rng.choice(names))
    scene, left = _Scene(home, rng), int(rng.integers(scene_sentences[0], scene_sentences[1] + 1))
    for _ in range(n_sentences_max):
        if left == 0:
            if rng.random() < p_home and scene.topic != home:
                topic = home
            else:
                topic = str(rng.choice([n for n in names if n != scene.topic]))
            scene = _Scene(topic, rng)
            left = int(rng.integers(scene_sentences[0], scene_sentences[1] + 1))
        left -= 1
        yield scene.topic, sentence(scene, rng)
