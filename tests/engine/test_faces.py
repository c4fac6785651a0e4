"""Face detection and recognition on real photos with the real, bundled dlib models.

Photos: scikit-image's astronaut (Eileen Collins), cameraman and coffee, and the sample images
shipped inside the installed insightface package (read from site-packages, never copied):
``t1.jpg`` (six people around a table) and ``Tom_Hanks_54745.png`` (an aligned face chip).

insightface's pretrained weights cannot exist on this machine, so its error paths run for
real against folders in tmp_path, and its working path runs on two tiny ONNX graphs built
here with the same input/output contract as SCRFD and ArcFace (a fake only at the edge of
what cannot exist here: production weights). They exercise the hash checks, the session
loading through insightface's own model_zoo classes, the box/landmark decoding and the
alignment; they say nothing about recognition quality.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data as skdata

from reenactment.engine import faces
from reenactment.engine.faces import (
    DlibBackend,
    FaceBackend,
    FaceDetection,
    FaceEmbedding,
    FaceModelError,
    InsightFaceBackend,
    MultipleFacesError,
    NoFaceError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------------------
# Photos
# --------------------------------------------------------------------------------------


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


INSIGHTFACE_IMAGES = _package_dir("insightface") / "data" / "images"


def insightface_image(name: str) -> np.ndarray:
    path = INSIGHTFACE_IMAGES / name
    assert path.is_file(), f"insightface no longer ships {path}; pick another sample image"
    return faces.load_rgb(path)


def jpeg(image: np.ndarray, quality: int = 30) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return faces.load_rgb(buffer.getvalue())


def blur(image: np.ndarray, radius: float = 2.0) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def hflip(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def crop_around(image: np.ndarray, detection: FaceDetection, margin: float = 0.5) -> np.ndarray:
    """The face plus ``margin`` times its size on every side, as a user would crop it."""
    box = detection.box
    pad = margin * max(box.width, box.height)
    y0, y1 = max(0, int(box.y0 - pad)), min(image.shape[0], int(box.y1 + pad))
    x0, x1 = max(0, int(box.x0 - pad)), min(image.shape[1], int(box.x1 + pad))
    return np.ascontiguousarray(image[y0:y1, x0:x1])


@pytest.fixture(scope="module")
def dlib_backend() -> FaceBackend:
    return faces.get_face_backend("dlib")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def cameraman() -> np.ndarray:
    return np.stack([skdata.camera()] * 3, axis=-1)


@pytest.fixture(scope="module")
def group_photo() -> np.ndarray:
    return insightface_image("t1.jpg")


@pytest.fixture(scope="module")
def astronaut_embedding(dlib_backend: FaceBackend, astronaut: np.ndarray) -> FaceEmbedding:
    return faces.embed_face(astronaut, dlib_backend)


@pytest.fixture(scope="module")
def group_embeddings(dlib_backend: FaceBackend, group_photo: np.ndarray) -> list[np.ndarray]:
    """One embedding per person of t1.jpg, each from a crop holding just that person's face."""
    detections = sorted(dlib_backend.detect(group_photo), key=lambda d: d.box.x0)
    assert len(detections) == 6
    return [
        faces.embed_face(crop_around(group_photo, detection), dlib_backend).vector
        for detection in detections
    ]


# --------------------------------------------------------------------------------------
# Module hygiene
# --------------------------------------------------------------------------------------


def test_importing_faces_loads_no_face_library_and_no_django() -> None:
    code = (
        "import sys, reenactment.engine.faces\n"
        "loaded = [m for m in ('dlib', 'insightface', 'onnxruntime', 'cv2', 'django') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_only_faces_imports_dlib_or_insightface() -> None:
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for package in ("reenactment", "governance", "config")
        for path in (REPO_ROOT / package).rglob("*.py")
        if path.name != "faces.py"
        and any(
            line.strip().startswith(prefix)
            for line in path.read_text(encoding="utf-8").splitlines()
            for prefix in ("import dlib", "from dlib", "import insightface", "from insightface")
        )
    ]
    assert offenders == []


# --------------------------------------------------------------------------------------
# Detection and the single-dominant-face rule
# --------------------------------------------------------------------------------------


def test_astronaut_has_exactly_one_face(dlib_backend: FaceBackend, astronaut: np.ndarray) -> None:
    detections = dlib_backend.detect(astronaut)

    # HOG alone also proposes her suit's patch (score ~0.1, as large as her face); the CNN
    # confirmation must drop it.
    assert len(detections) == 1
    face = faces.find_single_face(astronaut, dlib_backend)
    assert face == detections[0]
    x0, y0, x1, y1 = face.box.as_tuple()
    assert 150 < x0 < x1 < 290 and 50 < y0 < y1 < 190, face.box
    assert face.landmark_scheme == "dlib5"
    landmarks = face.landmarks_array()
    assert landmarks is not None and landmarks.shape == (5, 2)
    assert np.all((landmarks[:, 0] > x0) & (landmarks[:, 0] < x1))
    assert np.all((landmarks[:, 1] > y0) & (landmarks[:, 1] < y1))


def test_cameraman_face_is_found_by_the_cnn_fallback(
    dlib_backend: FaceBackend, cameraman: np.ndarray
) -> None:
    # HOG misses his three-quarter view entirely; the whole-image CNN scan finds it.
    face = faces.find_single_face(cameraman, dlib_backend)
    assert face.source == "dlib-mmod"
    assert 150 < face.box.x0 < face.box.x1 < 290 and 90 < face.box.y0 < face.box.y1 < 220


@pytest.mark.parametrize(
    "make_image",
    [
        pytest.param(skdata.coffee, id="coffee"),
        pytest.param(lambda: np.full((240, 320, 3), 127, np.uint8), id="flat-grey"),
    ],
)
def test_an_image_without_a_face_raises_no_face_error(
    dlib_backend: FaceBackend, make_image: Callable[[], np.ndarray]
) -> None:
    with pytest.raises(NoFaceError, match="no face found"):
        faces.find_single_face(make_image(), dlib_backend)


def test_group_photo_raises_multiple_faces_error_with_the_count(
    dlib_backend: FaceBackend, group_photo: np.ndarray
) -> None:
    with pytest.raises(MultipleFacesError) as caught:
        faces.find_single_face(group_photo, dlib_backend)

    assert caught.value.count == 6
    assert caught.value.total == 6
    assert "found 6 similarly large faces" in str(caught.value)


def test_a_small_background_face_does_not_make_the_portrait_ambiguous(
    dlib_backend: FaceBackend, astronaut: np.ndarray
) -> None:
    canvas = np.zeros((512, 900, 3), np.uint8)
    canvas[:, :512] = astronaut
    canvas[100:382, 560:842] = np.asarray(Image.fromarray(astronaut).resize((282, 282)))

    detections = dlib_backend.detect(canvas)
    assert len(detections) == 2
    ratio = detections[1].area / detections[0].area
    assert 0.2 < ratio < faces.DEFAULT_AMBIGUITY_RATIO

    assert faces.find_single_face(canvas, dlib_backend) == detections[0]
    with pytest.raises(MultipleFacesError, match="found 2 similarly large faces") as caught:
        faces.find_single_face(canvas, dlib_backend, ambiguity_ratio=ratio * 0.9)
    assert caught.value.count == 2


def test_two_equally_large_faces_are_ambiguous(
    dlib_backend: FaceBackend, astronaut: np.ndarray
) -> None:
    side_by_side = np.concatenate([astronaut, hflip(astronaut)], axis=1)
    with pytest.raises(MultipleFacesError, match="found 2 similarly large faces"):
        faces.find_single_face(side_by_side, dlib_backend)


# --------------------------------------------------------------------------------------
# Recognition: same person matches, different people do not
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(hflip, id="horizontal-flip"),
        pytest.param(blur, id="gaussian-blur-r2"),
        pytest.param(jpeg, id="jpeg-q30"),
    ],
)
def test_same_person_matches_under_flip_blur_and_jpeg(
    dlib_backend: FaceBackend,
    astronaut: np.ndarray,
    astronaut_embedding: FaceEmbedding,
    transform: Callable[[np.ndarray], np.ndarray],
) -> None:
    variant = faces.embed_face(transform(astronaut), dlib_backend)
    comparison = faces.compare_embeddings(astronaut_embedding, variant, dlib_backend)

    # Measured: flip 0.82, blur 0.62, JPEG 0.82 (distances 0.18 / 0.38 / 0.18).
    assert comparison.band == "match", comparison
    assert comparison.similarity > 0.55


def test_same_face_chip_matches_its_mirror_image(dlib_backend: FaceBackend) -> None:
    chip = insightface_image("Tom_Hanks_54745.png")
    score = faces.face_similarity(chip, hflip(chip), dlib_backend)
    assert dlib_backend.info.thresholds.band(score) == "match", score


def test_astronaut_and_cameraman_do_not_match(
    dlib_backend: FaceBackend, astronaut_embedding: FaceEmbedding, cameraman: np.ndarray
) -> None:
    comparison = faces.compare_embeddings(
        astronaut_embedding, faces.embed_face(cameraman, dlib_backend), dlib_backend
    )
    assert comparison.band == "no_match", comparison  # measured distance 0.82
    assert comparison.distance is not None and comparison.distance > 0.7


def test_distinct_people_of_the_group_photo_do_not_match_each_other(
    dlib_backend: FaceBackend, group_embeddings: list[np.ndarray]
) -> None:
    scores = {
        (i, j): dlib_backend.similarity(group_embeddings[i], group_embeddings[j])
        for i, j in itertools.combinations(range(len(group_embeddings)), 2)
    }
    bands = {pair: dlib_backend.info.thresholds.band(score) for pair, score in scores.items()}

    # 15 pairs of six different people: none may match. Closest measured: Perry-LeBlanc at
    # distance 0.63, in the review band; all others 0.71-0.89.
    assert all(band != "match" for band in bands.values()), scores
    assert max(scores.values()) < dlib_backend.info.thresholds.match


def test_nobody_in_the_group_photo_matches_the_astronaut_or_tom_hanks(
    dlib_backend: FaceBackend,
    astronaut_embedding: FaceEmbedding,
    group_embeddings: list[np.ndarray],
) -> None:
    tom = faces.embed_face(insightface_image("Tom_Hanks_54745.png"), dlib_backend).vector
    for other in (astronaut_embedding.vector, tom):
        for person in group_embeddings:
            comparison = dlib_backend.compare(other, person)
            assert comparison.band == "no_match", comparison


# --------------------------------------------------------------------------------------
# Helpers for the leakage gate
# --------------------------------------------------------------------------------------


def test_embed_frames_gives_none_for_frames_without_a_face(
    dlib_backend: FaceBackend, astronaut: np.ndarray, astronaut_embedding: FaceEmbedding
) -> None:
    # A small blank frame keeps the (whole-image CNN) search for a face that is not there cheap.
    blank = np.full((96, 96, 3), 200, np.uint8)
    frames = [astronaut, blank, jpeg(astronaut)]

    embeddings = faces.embed_frames(frames, dlib_backend)

    assert embeddings[1] is None
    first, last = embeddings[0], embeddings[2]
    assert first is not None and last is not None
    assert first.dtype == np.float32 and first.shape == (128,)
    # Deterministic: the same frame gives the very embedding embed_face gave.
    np.testing.assert_allclose(first, astronaut_embedding.vector, atol=1e-6)
    assert dlib_backend.compare(first, last).band == "match"
    assert faces.embed_frames(frames, dlib_backend, stride=2)[1] is None


def test_face_similarity_accepts_images_and_embeddings_alike(
    dlib_backend: FaceBackend, astronaut: np.ndarray, astronaut_embedding: FaceEmbedding
) -> None:
    flipped = hflip(astronaut)
    from_images = faces.face_similarity(astronaut, flipped, dlib_backend)
    from_embeddings = faces.face_similarity(
        astronaut_embedding, faces.embed_face(flipped, dlib_backend).vector, dlib_backend
    )
    assert from_images == pytest.approx(from_embeddings, abs=1e-6)
    assert faces.face_similarity(astronaut_embedding, astronaut_embedding, dlib_backend) == 1.0


def test_comparison_carries_metric_thresholds_and_fingerprint(
    dlib_backend: FaceBackend, astronaut_embedding: FaceEmbedding
) -> None:
    comparison = dlib_backend.compare(astronaut_embedding.vector, astronaut_embedding.vector)
    assert comparison.similarity == 1.0 and comparison.distance == 0.0
    assert comparison.metric == "euclidean"
    assert (
        comparison.fingerprint == dlib_backend.info.fingerprint == astronaut_embedding.fingerprint
    )
    # dlib's customary 0.6 distance lies inside the review band, 0.5 inside match.
    thresholds = dlib_backend.info.thresholds
    assert thresholds.band(1 - 0.6) == "review"
    assert thresholds.band(1 - 0.5) == "match"
    assert thresholds.band(1 - 0.7) == "no_match"


def test_an_embedding_from_another_model_is_refused(
    dlib_backend: FaceBackend, astronaut_embedding: FaceEmbedding
) -> None:
    foreign = FaceEmbedding(
        vector=astronaut_embedding.vector,
        detection=astronaut_embedding.detection,
        backend="dlib",
        fingerprint="0" * 64,
    )
    with pytest.raises(ValueError, match="different model"):
        faces.face_similarity(astronaut_embedding, foreign, dlib_backend)


def test_image_validation() -> None:
    grey = np.zeros((4, 5), np.uint8)
    assert faces.to_rgb_uint8(grey).shape == (4, 5, 3)
    assert faces.to_rgb_uint8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(TypeError, match="uint8"):
        faces.to_rgb_uint8(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ValueError, match="image"):
        faces.to_rgb_uint8(np.zeros((4, 5, 2), np.uint8))


# --------------------------------------------------------------------------------------
# Backend identity: info, licence, fingerprint, cache
# --------------------------------------------------------------------------------------

DLIB_FILES = (
    "shape_predictor_5_face_landmarks.dat",
    "dlib_face_recognition_resnet_model_v1.dat",
    "mmod_human_face_detector.dat",
)


@pytest.fixture()
def dlib_model_copy(tmp_path: Path) -> Path:
    source = _package_dir("face_recognition_models") / "models"
    target = tmp_path / "dlib-models"
    target.mkdir()
    for name in DLIB_FILES:
        shutil.copyfile(source / name, target / name)
    return target


def test_dlib_backend_declares_metric_thresholds_licence_and_pinned_files(
    dlib_backend: FaceBackend,
) -> None:
    info = dlib_backend.info
    assert info.name == "dlib" and info.metric == "euclidean" and info.embedding_dim == 128
    assert dict(info.files) == dict(faces.DLIB_MODEL_SHA256)
    assert "shape_predictor_68_face_landmarks.dat" not in info.files
    assert info.fingerprint == faces.fingerprint_of("dlib", info.files)
    assert "CC0" in info.licence
    assert json.loads(json.dumps(info.to_dict()))["fingerprint"] == info.fingerprint


def test_backend_cache_and_stable_fingerprint(dlib_backend: FaceBackend) -> None:
    assert faces.get_face_backend("dlib") is dlib_backend
    second = DlibBackend()
    assert second is not dlib_backend
    assert second.info.fingerprint == dlib_backend.info.fingerprint
    with pytest.raises(ValueError, match="unknown face backend"):
        faces.get_face_backend("facenet")


def test_fingerprint_changes_with_a_model_file(
    dlib_backend: FaceBackend, dlib_model_copy: Path, astronaut: np.ndarray
) -> None:
    predictor = dlib_model_copy / "shape_predictor_5_face_landmarks.dat"
    with predictor.open("ab") as stream:  # dlib ignores trailing bytes: still loadable
        stream.write(b"\0")

    # Without a new pin the changed file is refused, by name.
    with pytest.raises(FaceModelError, match="shape_predictor_5_face_landmarks.dat") as caught:
        DlibBackend(dlib_model_copy)
    assert caught.value.mismatched == ("shape_predictor_5_face_landmarks.dat",)

    # Pinned anew, it loads, and every result it produces says it came from other weights.
    pins = dict(faces.DLIB_MODEL_SHA256)
    pins[predictor.name] = faces.sha256_file(predictor)
    changed = DlibBackend(dlib_model_copy, expected_sha256=pins)
    assert changed.info.fingerprint != dlib_backend.info.fingerprint
    assert len(changed.detect(astronaut)) == 1


def test_dlib_backend_names_a_missing_model_file(dlib_model_copy: Path) -> None:
    (dlib_model_copy / "dlib_face_recognition_resnet_model_v1.dat").unlink()
    with pytest.raises(FaceModelError, match="dlib_face_recognition_resnet_model_v1.dat"):
        DlibBackend(dlib_model_copy)


def test_plain_hog_backend_without_the_cnn(dlib_model_copy: Path, astronaut: np.ndarray) -> None:
    (dlib_model_copy / "mmod_human_face_detector.dat").unlink()
    hog_only = DlibBackend(dlib_model_copy)  # the CNN file is optional
    assert hog_only.info.config["detector"] == "hog"
    assert "mmod_human_face_detector.dat" not in hog_only.info.files
    assert hog_only.detect(astronaut)[0].source == "dlib-hog"
    with pytest.raises(FaceModelError, match="mmod_human_face_detector.dat"):
        DlibBackend(dlib_model_copy, cnn=True)


# --------------------------------------------------------------------------------------
# insightface: tiny SCRFD/ArcFace-shaped ONNX graphs (see the module docstring)
# --------------------------------------------------------------------------------------

DETECTOR = "det_10g.onnx"
RECOGNISER = "w600k_r50.onnx"


def _onnx_model(nodes: list, inputs: list, outputs: list, initialisers: list, path: Path) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initialisers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_scrfd_like(path: Path) -> None:
    """SCRFD's contract: 9 outputs (score/box/keypoints at strides 8, 16, 32, 2 anchors).

    Only stride 32 fires, on cells whose mean brightness is high: a white 32x32 square on
    black, aligned to the stride-32 grid, is one "face" with a 64x64 box around the anchor.
    """
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> object:
        return numpy_helper.from_array(np.asarray(value), name)

    nodes = [helper.make_node("ReduceMean", ["input.1"], ["grey"], axes=[1], keepdims=1)]
    initialisers = [
        const("column", np.array([-1, 1], np.int64)),
        const("zero4", np.zeros((1, 4), np.float32)),
        const("distance", np.ones((1, 4), np.float32)),
        const("zero10", np.zeros((1, 10), np.float32)),
        const(
            "keypoints",
            np.array([[-0.4, -0.3, 0.4, -0.3, 0.0, 0.05, -0.3, 0.4, 0.3, 0.4]], np.float32),
        ),
    ]
    for stride in (8, 16, 32):
        s = str(stride)
        nodes += [
            helper.make_node(
                "AveragePool",
                ["grey"],
                ["pool" + s],
                kernel_shape=[stride] * 2,
                strides=[stride] * 2,
            ),
            helper.make_node("Transpose", ["pool" + s], ["nhwc" + s], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", ["nhwc" + s, "column"], ["flat" + s]),
            helper.make_node("Concat", ["flat" + s, "flat" + s], ["pair" + s], axis=1),
            helper.make_node("Reshape", ["pair" + s, "column"], ["anchor" + s]),
            helper.make_node("Mul", ["anchor" + s, "gain" + s], ["scaled" + s]),
            helper.make_node("Add", ["scaled" + s, "bias" + s], ["logit" + s]),
            helper.make_node("Sigmoid", ["logit" + s], ["score" + s]),
            helper.make_node("MatMul", ["anchor" + s, "zero4"], ["z4_" + s]),
            helper.make_node("Add", ["z4_" + s, "distance"], ["bbox" + s]),
            helper.make_node("MatMul", ["anchor" + s, "zero10"], ["z10_" + s]),
            helper.make_node("Add", ["z10_" + s, "keypoints"], ["kps" + s]),
        ]
        fires = stride == 32
        initialisers += [
            const("gain" + s, np.array([[20.0 if fires else 0.0]], np.float32)),
            const("bias" + s, np.array([[-10.0 if fires else -20.0]], np.float32)),
        ]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    outputs = [
        helper.make_tensor_value_info(f"{kind}{stride}", TensorProto.FLOAT, ["n", width])
        for kind, width in (("score", 1), ("bbox", 4), ("kps", 10))
        for stride in (8, 16, 32)
    ]
    _onnx_model(nodes, [image], outputs, initialisers, path)


def build_arcface_like(path: Path, seed: int = 0, dim: int = 64) -> None:
    """ArcFace's contract: (N, 3, 112, 112) in, one (N, dim) embedding out."""
    from onnx import TensorProto, helper, numpy_helper

    projection = np.random.default_rng(seed).standard_normal((3 * 14 * 14, dim))
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "projection"], ["fc1"]),
    ]
    _onnx_model(
        nodes,
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["n", dim])],
        [numpy_helper.from_array(projection.astype(np.float32), "projection")],
        path,
    )


def write_manifest(folder: Path, names: tuple[str, ...] = (DETECTOR, RECOGNISER)) -> dict:
    pins = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}
    (folder / "manifest.json").write_text(json.dumps(pins), encoding="utf-8")
    return pins


@pytest.fixture()
def model_pack(tmp_path: Path) -> Path:
    folder = tmp_path / "buffalo_l"
    folder.mkdir()
    build_scrfd_like(folder / DETECTOR)
    build_arcface_like(folder / RECOGNISER)
    write_manifest(folder)
    return folder


def white_square(size: int, top_left: int, side: int) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[top_left : top_left + side, top_left : top_left + side] = 255
    return image


def test_insightface_refuses_a_missing_folder_naming_the_files(tmp_path: Path) -> None:
    with pytest.raises(FaceModelError, match="does not exist") as caught:
        InsightFaceBackend(tmp_path / "absent")
    assert set(caught.value.missing) == {DETECTOR, RECOGNISER}
    assert DETECTOR in str(caught.value) and RECOGNISER in str(caught.value)


def test_insightface_refuses_an_empty_folder_naming_the_files(tmp_path: Path) -> None:
    with pytest.raises(FaceModelError) as caught:
        InsightFaceBackend(tmp_path)
    message = str(caught.value)
    assert "manifest.json" in message and DETECTOR in message and RECOGNISER in message
    assert "unpinned" in message

    pins = {DETECTOR: "a" * 64, RECOGNISER: "b" * 64}
    with pytest.raises(FaceModelError, match=f"missing file\\(s\\): {DETECTOR}, {RECOGNISER}"):
        InsightFaceBackend(tmp_path, manifest=pins)


def test_insightface_names_the_one_missing_file(model_pack: Path) -> None:
    (model_pack / RECOGNISER).unlink()
    with pytest.raises(FaceModelError, match=f"missing file\\(s\\): {RECOGNISER}$") as caught:
        InsightFaceBackend(model_pack)
    assert caught.value.missing == (RECOGNISER,)


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_insightface_names_a_file_whose_hash_does_not_match(model_pack: Path, damage: str) -> None:
    path = model_pack / DETECTOR
    content = path.read_bytes()
    if damage == "corrupted":
        path.write_bytes(content[:100] + bytes([content[100] ^ 0xFF]) + content[101:])
    else:  # an interrupted copy
        path.write_bytes(content[: len(content) // 2])

    with pytest.raises(FaceModelError, match=f"{DETECTOR}: sha256 .* does not match") as caught:
        InsightFaceBackend(model_pack)
    assert caught.value.mismatched == (DETECTOR,)
    assert RECOGNISER not in str(caught.value)


def test_insightface_refuses_a_file_left_out_of_the_manifest(model_pack: Path) -> None:
    write_manifest(model_pack, names=(DETECTOR,))
    with pytest.raises(FaceModelError, match=f"no pinned sha256 for: {RECOGNISER}"):
        InsightFaceBackend(model_pack)


def test_insightface_refuses_a_manifest_in_another_format(model_pack: Path) -> None:
    # insightface >= 2 writes its own manifest.json (manifest_version, tasks, ...).
    (model_pack / "manifest.json").write_text(
        json.dumps({"manifest_version": 2, "model_id": "buffalo_l", "tasks": {}}),
        encoding="utf-8",
    )
    with pytest.raises(FaceModelError, match="must map file names to 64-hex-digit sha256"):
        InsightFaceBackend(model_pack)


def test_insightface_working_path_on_scrfd_and_arcface_shaped_graphs(model_pack: Path) -> None:
    backend = faces.get_face_backend("insightface", model_dir=model_pack)
    assert faces.get_face_backend("insightface", model_dir=str(model_pack)) is backend
    info = backend.info
    assert info.metric == "cosine" and info.embedding_dim == 64
    assert "non-commercial" in info.licence
    pins = json.loads((model_pack / "manifest.json").read_text(encoding="utf-8"))
    assert dict(info.files) == pins
    assert info.fingerprint == faces.fingerprint_of("insightface", pins)

    # A 640x640 image is analysed at scale 1; a 1280x1280 one at 0.5 and mapped back.
    small, large = white_square(640, 256, 32), white_square(1280, 512, 64)
    [face] = backend.detect(small)
    assert face.box.as_tuple() == (224.0, 224.0, 288.0, 288.0)
    assert face.source == "insightface-scrfd" and face.landmark_scheme == "arcface5"
    assert face.score > 0.99
    [face_large] = backend.detect(large)
    assert face_large.box.as_tuple() == (448.0, 448.0, 576.0, 576.0)
    assert backend.detect(np.zeros((300, 500, 3), np.uint8)) == []
    with pytest.raises(NoFaceError):
        faces.find_single_face(np.zeros((300, 500, 3), np.uint8), backend)

    vector = backend.embed(small, face)
    assert vector.dtype == np.float32 and vector.shape == (64,)
    assert backend.similarity(vector, vector) == pytest.approx(1.0)
    # ArcFace alignment is a similarity warp onto a fixed template: scale drops out.
    assert faces.face_similarity(small, large, backend) > 0.99
    assert backend.compare(vector, -vector).band == "no_match"

    dlib_style = FaceDetection(box=face.box, score=1.0, source="dlib-hog", landmark_scheme="dlib5")
    with pytest.raises(ValueError, match="landmark scheme 'dlib5'"):
        backend.embed(small, dlib_style)
    faces.clear_face_backend_cache()


def test_insightface_fingerprint_follows_the_weights(model_pack: Path, tmp_path: Path) -> None:
    first = InsightFaceBackend(model_pack)
    again = InsightFaceBackend(model_pack)
    assert again.info.fingerprint == first.info.fingerprint

    retrained = tmp_path / "retrained"
    shutil.copytree(model_pack, retrained)
    build_arcface_like(retrained / RECOGNISER, seed=1)
    # The folder's old manifest no longer vouches for the new recogniser ...
    with pytest.raises(FaceModelError, match=RECOGNISER):
        InsightFaceBackend(retrained)
    # ... pins passed by the caller (the model registry) take precedence over the folder's.
    pins = {name: faces.sha256_file(retrained / name) for name in (DETECTOR, RECOGNISER)}
    changed = InsightFaceBackend(retrained, manifest=pins)
    assert changed.info.files[DETECTOR] == first.info.files[DETECTOR]
    assert changed.info.fingerprint != first.info.fingerprint


def test_alignment_matches_insightface_norm_crop_transform() -> None:
    from insightface.utils import face_align

    rng = np.random.default_rng(3)
    template = np.array(faces._ARCFACE_TEMPLATE, dtype=np.float32)
    for _ in range(5):
        angle = rng.uniform(-0.5, 0.5)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        landmarks = template @ rotation.T * rng.uniform(0.5, 3.0) + rng.uniform(0, 400, 2)
        landmarks = (landmarks + rng.normal(0, 2, landmarks.shape)).astype(np.float32)
        with warnings.catch_warnings():
            # insightface calls scikit-image's deprecated SimilarityTransform.estimate.
            warnings.simplefilter("ignore", FutureWarning)
            expected = face_align.estimate_norm(landmarks, image_size=112)
        ours = faces._similarity_transform(landmarks, faces._ARCFACE_TEMPLATE)
        np.testing.assert_allclose(ours, expected, atol=1e-4)
