"""The SynthFace benchmark's dlib columns (benchmarks/synthface_eval.py): real dlib on real
SynthFace renders, upscaled as the benchmark does."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
try:
    from synthface_eval import TEST_SEED, FaceJudge, make_cases, markdown_table
finally:
    sys.path.remove(str(REPO_ROOT / "benchmarks"))

FRAMES = 2


@pytest.fixture(scope="module")
def cases():  # noqa: ANN201 - benchmark Cases
    return make_cases(2, FRAMES, 64, seed=777)


@pytest.fixture(scope="module")
def judge() -> FaceJudge:
    return FaceJudge(256)


def test_another_case_seed_draws_another_set_of_cases(cases):
    test_set = make_cases(2, FRAMES, 64)
    assert not np.array_equal(cases[0].reference, test_set[0].reference)
    again = make_cases(2, FRAMES, 64, seed=TEST_SEED)
    assert np.array_equal(again[1].target, test_set[1].target)


def test_copying_the_portrait_is_the_portrait_and_the_driver_is_the_driver(cases, judge):
    copy = judge.scores([np.repeat(c.reference[None], FRAMES, 0) for c in cases], cases)
    assert copy["face_found"] == 1.0
    assert copy["dlib_portrait"] == pytest.approx(1.0)
    assert copy["dlib_driver"] < 0.9
    assert copy["dlib_closer_to_portrait"] == 1.0
    driving = judge.scores([c.driving for c in cases], cases)
    assert driving["dlib_driver"] == pytest.approx(1.0)
    assert driving["dlib_closer_to_portrait"] == 0.0
    # The baseline between the two characters, the same pairs seen from either side.
    assert driving["dlib_portrait"] == pytest.approx(copy["dlib_driver"], rel=1e-6)


def test_frames_without_a_face_count_as_faceless_and_show_as_a_dash(cases, judge):
    blank = [np.full((FRAMES, 64, 64, 3), 128, np.uint8) for _ in cases]
    scores = judge.scores(blank, cases)
    assert scores["face_found"] == 0.0
    assert math.isnan(scores["dlib_portrait"]) and math.isnan(scores["dlib_closer_to_portrait"])
    metrics = dict.fromkeys(
        ["L1", "PSNR", "SSIM", "motion_mae", "pose_mae", "expression_mae"], 0.0
    ) | dict.fromkeys(["id_dist_source", "id_dist_driver", "leak", "closer_to_driver"], 0.0)
    row = markdown_table({"blank": metrics | scores}).splitlines()[-1]
    assert row.endswith("| 0% | - | - | - |")
