"""Speak the demo's stories, each in a fresh Python process, so rebuilds are byte-identical.

espeak-ng carries waveform state (voicing phase, noise generators) from one utterance to the
next, so the same sentence comes out slightly different — even in length — later in a process
(measured: 54,827 vs 54,625 samples for one sentence spoken twice). A story spoken first in a
fresh process always sounds the same. :func:`speak_stories` runs ``python -m
core.data.demo.speak CONFIG_JSON INDEX OUT.npz`` per story, two at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from core.data.demo import synth, text
from core.data.demo.config import DemoConfig, rng_for
from core.errors import DataError
from core.progress import ProgressFn, report
from core.settings import REPO_ROOT

MAX_WORKERS = 2  #: stories spoken at once


def speak_story(config: DemoConfig, index: int) -> tuple:
    """Story ``index`` in this process: ``(home topic, SpokenStory)``.

    Sentences are added until the next one would pass the story's target duration, drawn from
    ``config.story_seconds`` (the last story, the test story: ``config.test_story_seconds``).
    """
    synth.reset_random()
    rng = rng_for(config.seed, 1, index)
    test = index == config.n_stories - 1
    target = float(rng.uniform(*(config.test_story_seconds if test else config.story_seconds)))
    utts, total, topic0 = [], 0.0, None
    for topic, words in text.story_sentences(rng):
        topic0 = topic0 or topic
        u = synth.speak_sentence(words, voice=config.voice, rate_wpm=config.rate_wpm)
        if total + u.duration > target:
            break
        utts.append(u)
        total += u.duration
    return topic0, synth.join(utts)


def _save(path: Path, topic: str, sp: synth.SpokenStory) -> None:
    arrays = {"audio": sp.audio, "meta": np.array(json.dumps({"topic": topic, "dropped": sp.dropped}))}
    for name, ev in (("words", sp.words), ("phones", sp.phones)):
        arrays[f"{name}_times"] = np.array([(a, b) for a, b, _ in ev], dtype=np.float64).reshape(-1, 2)
        arrays[f"{name}_labels"] = np.array([lab for _, _, lab in ev], dtype=str)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load(path: Path) -> tuple:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        ev = {name: [(float(a), float(b), str(lab)) for (a, b), lab in
                     zip(z[f"{name}_times"], z[f"{name}_labels"])] for name in ("words", "phones")}
        sp = synth.SpokenStory(audio=z["audio"], words=ev["words"], phones=ev["phones"],
                               dropped=Counter(meta["dropped"]))
    return meta["topic"], sp


def speak_stories(config: DemoConfig, workdir: Path, progress: ProgressFn = None) -> list:
    """``[(home topic, SpokenStory)]`` of all ``config.n_stories`` stories (fresh process each)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    blob = json.dumps(config.to_dict())

    def run(i: int) -> tuple:
        out = workdir / f"story{i:03d}.npz"
        proc = subprocess.run([sys.executable, "-m", "core.data.demo.speak", blob, str(i), str(out)],
                              env=env, cwd=str(REPO_ROOT), capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"speaking demo story {i} failed: {last}")
        return _load(out)

    results = {}
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, config.n_stories))) as pool:
        futures = {pool.submit(run, i): i for i in range(config.n_stories)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            report(progress, len(results) / config.n_stories,
                   f"demo: spoke story {len(results)}/{config.n_stories}")
    return [results[i] for i in range(config.n_stories)]


def main(argv: list) -> int:
    """``CONFIG_JSON INDEX OUT.npz``: speak one story into ``OUT.npz``."""
    config = DemoConfig.from_dict(json.loads(argv[0]))
    topic, sp = speak_story(config, int(argv[1]))
    _save(Path(argv[2]), topic, sp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
