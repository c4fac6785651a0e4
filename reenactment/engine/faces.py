"""Face detection and recognition: the one adapter for dlib and insightface.

Everything else in the project reaches dlib and insightface through this module
(ARCHITECTURE.md §2), so their moving APIs are absorbed in one place and both libraries are
imported lazily, inside the backends: importing this module costs numpy only.

The engine computes, governance decides. Backends *declare* default thresholds and a
fingerprint of the exact model files they loaded; verdicts, policies and records live in
governance, which stores :meth:`BackendInfo.to_dict` with every result it keeps.

Backends (one interface, :class:`FaceBackend`):

* ``dlib`` (the default, and the one the tests run): HOG proposals confirmed by dlib's CNN
  (mmod) detector, the 5-point landmark model and the ResNet 128-D descriptor, all bundled
  with the installed ``face_recognition_models`` distribution and hash-pinned below. The
  68-point landmark model that ships next to them is licensed for non-commercial use only
  and is never loaded.
* ``insightface``: a buffalo_l-style pair (SCRFD detector ``det_10g.onnx`` + ArcFace
  recogniser ``w600k_r50.onnx``) read from a configured read-only folder. Every file is
  SHA-256 checked before it is loaded; nothing is ever downloaded. insightface's pretrained
  packs are licensed for non-commercial research only, recorded in ``BackendInfo.licence``.

Similarity scheme, the same for every backend: ``similarity(a, b)`` is *higher = more
similar* and lies in [-1, 1].

* ``cosine`` backends (insightface) return the cosine of the two embeddings.
* ``euclidean`` backends (dlib) return ``1 - euclidean distance``. dlib's descriptors are
  close to unit length, so distances lie in [0, 2] and dlib's customary 0.6 distance
  cut-off is a similarity of 0.4. :attr:`FaceComparison.distance` gives the raw distance
  back for people who think in dlib's terms.

Thresholds (:class:`FaceThresholds`) are always expressed in that similarity scheme.

Embeddings are biometric data: this module never writes them anywhere; callers decide.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import json
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only; PIL is imported lazily at run time
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_AMBIGUITY_RATIO",
    "DLIB_MODEL_SHA256",
    "BackendInfo",
    "DlibBackend",
    "FaceBackend",
    "FaceBox",
    "FaceComparison",
    "FaceDetection",
    "FaceEmbedding",
    "FaceError",
    "FaceModelError",
    "FaceThresholds",
    "InsightFaceBackend",
    "MultipleFacesError",
    "NoFaceError",
    "clear_face_backend_cache",
    "compare_embeddings",
    "embed_face",
    "embed_frames",
    "face_backend_names",
    "face_similarity",
    "find_single_face",
    "fingerprint_of",
    "get_face_backend",
    "load_rgb",
    "sha256_file",
    "to_rgb_uint8",
]

Metric = Literal["euclidean", "cosine"]
Band = Literal["match", "review", "no_match"]

#: A face competes with the largest one when its box area is at least this fraction of the
#: largest box's area, i.e. its linear size is at least ~63 % (sqrt 0.4) of the largest.
#: A bystander further back, under about two thirds of the subject's size, is background;
#: anything closer to the subject's size makes "which face?" a question a human must answer.
DEFAULT_AMBIGUITY_RATIO: Final[float] = 0.4

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class FaceError(Exception):
    """Base class of every error this module raises on purpose."""


class FaceModelError(FaceError):
    """Model files are missing, incomplete, unpinned or do not match their pinned hashes.

    ``missing`` and ``mismatched`` name the offending files so an operator can fix the
    folder without reading a traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        mismatched: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)
        self.mismatched: tuple[str, ...] = tuple(mismatched)


class NoFaceError(FaceError):
    """The image holds no detectable face."""


class MultipleFacesError(FaceError):
    """The image holds several similarly large faces, so no single subject is dominant."""

    def __init__(self, message: str, *, count: int, total: int) -> None:
        super().__init__(message)
        #: faces whose area is within the ambiguity ratio of the largest one (>= 2)
        self.count = count
        #: every face the detector found, including small background ones
        self.total = total


# --------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned box in pixel coordinates of the analysed image (x right, y down)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return self.width * self.height

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def clipped(self, width: int, height: int) -> FaceBox:
        """The part of the box inside a ``width`` x ``height`` image."""
        return FaceBox(
            min(max(self.x0, 0.0), float(width)),
            min(max(self.y0, 0.0), float(height)),
            min(max(self.x1, 0.0), float(width)),
            min(max(self.y1, 0.0), float(height)),
        )

    def iou(self, other: FaceBox) -> float:
        """Intersection over union, 0 for disjoint or empty boxes."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class FaceDetection:
    """One detected face.

    ``score`` is the producing detector's own confidence (see ``source``); scores of
    different detectors are not comparable. ``landmarks`` are five (x, y) points whose
    meaning is given by ``landmark_scheme``:

    * ``"dlib5"``: outer and inner corner of each eye and the bottom of the nose (dlib's
      5-point model; not the same points as ArcFace's);
    * ``"arcface5"``: left eye, right eye, nose tip, left and right mouth corner (SCRFD).
    """

    box: FaceBox
    score: float
    source: str
    landmarks: tuple[tuple[float, float], ...] | None = None
    landmark_scheme: str | None = None

    @property
    def area(self) -> float:
        return self.box.area

    def landmarks_array(self) -> np.ndarray | None:
        """Landmarks as a float32 (5, 2) array, or None when the detector gave none."""
        if self.landmarks is None:
            return None
        return np.asarray(self.landmarks, dtype=np.float32)


@dataclass(frozen=True)
class FaceThresholds:
    """A backend's *default* decision bands, in the similarity scheme (higher = closer).

    ``similarity >= match`` is a match, ``review <= similarity < match`` needs a human,
    anything lower is no match. Governance may apply a stricter policy; these are the
    values the backend's authors and our measurements support.
    """

    match: float
    review: float

    def __post_init__(self) -> None:
        if not self.review <= self.match:
            raise ValueError(f"review threshold {self.review} is above match {self.match}")

    def band(self, similarity: float) -> Band:
        if similarity >= self.match:
            return "match"
        if similarity >= self.review:
            return "review"
        return "no_match"


@dataclass(frozen=True)
class BackendInfo:
    """What a result must carry to be reproducible and auditable.

    ``fingerprint`` identifies the exact model files (see :func:`fingerprint_of`); ``files``
    maps each loaded file name to its SHA-256; ``config`` holds the options that change
    which faces are found (detector settings), so two results are comparable only when
    both agree.
    """

    name: str
    metric: Metric
    thresholds: FaceThresholds
    embedding_dim: int
    fingerprint: str
    files: Mapping[str, str]
    licence: str
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def similarity_scheme(self) -> str:
        if self.metric == "euclidean":
            return "1 - euclidean distance (higher = more similar)"
        return "cosine similarity (higher = more similar)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description to store next to every score."""
        return {
            "name": self.name,
            "metric": self.metric,
            "similarity_scheme": self.similarity_scheme,
            "thresholds": {"match": self.thresholds.match, "review": self.thresholds.review},
            "embedding_dim": self.embedding_dim,
            "fingerprint": self.fingerprint,
            "files": dict(sorted(self.files.items())),
            "licence": self.licence,
            "config": dict(self.config),
        }


@dataclass(frozen=True, eq=False)
class FaceEmbedding:
    """An embedding with the face it came from and the backend that computed it.

    ``vector`` is float32; it is biometric data and this module never persists it.
    """

    vector: np.ndarray
    detection: FaceDetection
    backend: str
    fingerprint: str


@dataclass(frozen=True)
class FaceComparison:
    """A similarity score with everything needed to interpret and audit it."""

    similarity: float
    band: Band
    metric: Metric
    thresholds: FaceThresholds
    backend: str
    fingerprint: str

    @property
    def distance(self) -> float | None:
        """The raw euclidean distance for euclidean backends (dlib), else None."""
        return 1.0 - self.similarity if self.metric == "euclidean" else None


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate and normalise an image to a C-contiguous (H, W, 3) uint8 RGB array.

    Greyscale (H, W) or (H, W, 1) is stacked to three channels and RGBA drops its alpha.
    Anything else, and any dtype other than uint8, is refused: silently rescaling floats
    would hide a caller's bug and change scores.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    elif not (array.ndim == 3 and array.shape[2] == 3):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image of shape {array.shape}")
    # dlib and OpenCV need contiguous memory; views from flips or crops are not.
    return np.ascontiguousarray(array)


def load_rgb(source: str | Path | bytes | PILImage.Image | np.ndarray) -> np.ndarray:
    """Load an image as (H, W, 3) uint8 RGB from a path, encoded bytes, PIL image or array.

    EXIF orientation is applied so a phone portrait is analysed upright, as people see it.
    """
    if isinstance(source, np.ndarray):
        return to_rgb_uint8(source)
    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, bytes | bytearray):
        image = Image.open(io.BytesIO(bytes(source)))
    else:
        image = Image.open(Path(source))
    image = ImageOps.exif_transpose(image)
    return to_rgb_uint8(np.asarray(image.convert("RGB")))


# --------------------------------------------------------------------------------------
# Model files: hashing, verification, fingerprints
# --------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large weights do not sit in memory twice."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_of(backend: str, files: Mapping[str, str]) -> str:
    """SHA-256 over the backend name and its model files' hashes (sorted by file name).

    Two backends agree on the fingerprint exactly when they loaded byte-identical model
    files for the same backend; any changed weight file changes it.
    """
    canonical = json.dumps(
        {"backend": backend, "files": dict(sorted(files.items()))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _verify_model_files(
    folder: Path,
    required: Sequence[str],
    expected: Mapping[str, str],
    *,
    keep_bytes: bool = False,
) -> tuple[dict[str, str], dict[str, bytes]]:
    """Check every required file exists and matches its pinned SHA-256, all problems at once.

    Returns the hashes and, with ``keep_bytes``, the verified contents, so a caller can load
    exactly the bytes that were checked rather than re-reading a file that may have changed.
    Raises :class:`FaceModelError` naming every missing, unpinned or mismatching file.
    """
    if not folder.is_dir():
        raise FaceModelError(
            f"model folder {folder} does not exist or is not a folder; "
            f"expected files: {', '.join(required)}",
            missing=required,
        )
    missing = [name for name in required if not (folder / name).is_file()]
    unpinned = [name for name in required if name not in expected]
    hashes: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    mismatched: list[str] = []
    details: list[str] = []
    for name in required:
        if name in missing or name in unpinned:
            continue
        path = folder / name
        if keep_bytes:
            data = path.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            contents[name] = data
        else:
            actual = sha256_file(path)
        if actual != expected[name].lower():
            mismatched.append(name)
            details.append(
                f"{name}: sha256 {actual[:12]}... does not match the pinned "
                f"{expected[name][:12]}... (incomplete or modified file)"
            )
        hashes[name] = actual
    problems: list[str] = []
    if missing:
        problems.append(f"missing file(s): {', '.join(missing)}")
    if unpinned:
        problems.append(f"no pinned sha256 for: {', '.join(unpinned)}")
    problems.extend(details)
    if problems:
        raise FaceModelError(
            f"model folder {folder} failed verification: " + "; ".join(problems),
            missing=missing,
            mismatched=mismatched,
        )
    return hashes, contents


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------


class FaceBackend(ABC):
    """Face detection + recognition behind one interface.

    Implementations load their models in ``__init__`` (verifying hashes first) and are then
    read-only, so one instance per process is shared through :func:`get_face_backend`.
    """

    info: BackendInfo

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB uint8 image, largest box first (ties: higher score first)."""

    @abstractmethod
    def embed(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        """The float32 embedding of ``detection`` (found in this same ``image``)."""

    @abstractmethod
    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Similarity of two embeddings in [-1, 1], higher = more similar (module docs)."""

    @property
    def name(self) -> str:
        return self.info.name

    def compare(self, a: np.ndarray, b: np.ndarray) -> FaceComparison:
        """Similarity of two embeddings with the backend's default band and fingerprint."""
        score = self.similarity(a, b)
        return FaceComparison(
            similarity=score,
            band=self.info.thresholds.band(score),
            metric=self.info.metric,
            thresholds=self.info.thresholds,
            backend=self.info.name,
            fingerprint=self.info.fingerprint,
        )


def _sorted_largest_first(detections: Iterable[FaceDetection]) -> list[FaceDetection]:
    return sorted(detections, key=lambda d: (-d.area, -d.score))


def _as_vector(embedding: np.ndarray, dim: int) -> np.ndarray:
    vector = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if vector.shape != (dim,):
        raise ValueError(f"expected an embedding of {dim} values, got shape {vector.shape}")
    return vector


# --------------------------------------------------------------------------------------
# dlib
# --------------------------------------------------------------------------------------

DLIB_SHAPE_PREDICTOR: Final[str] = "shape_predictor_5_face_landmarks.dat"
DLIB_RECOGNISER: Final[str] = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_CNN_DETECTOR: Final[str] = "mmod_human_face_detector.dat"

#: SHA-256 of the files shipped by face_recognition_models 0.3.0 (unchanged since 2017).
#: Pinning them means a tampered or swapped install fails loudly instead of silently
#: changing every score; the fingerprint of the default dlib backend is therefore the same
#: on every machine.
DLIB_MODEL_SHA256: Final[Mapping[str, str]] = {
    DLIB_SHAPE_PREDICTOR: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    DLIB_RECOGNISER: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    DLIB_CNN_DETECTOR: "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
}

DLIB_LICENCE: Final[str] = (
    "dlib models: public domain / CC0 1.0 (mmod CNN detector, 5-point landmarks, ResNet "
    "descriptor; face_recognition_models); dlib library: Boost Software License 1.0. "
    "The 68-point landmark model (non-commercial) is never loaded."
)

#: Defaults in the similarity scheme (1 - euclidean distance). dlib's published operating
#: point is distance 0.6 (99.38 % on LFW); errors concentrate within about +-0.05 of it, so
#: that strip is the review band: distance <= 0.55 matches, 0.55 < distance <= 0.65 goes to a
#: human, beyond 0.65 is no match. On our test photos the same person under flip, blur and
#: JPEG stays <= 0.49 while different people start at 0.61 (see tests/engine/test_faces.py).
DLIB_THRESHOLDS: Final[FaceThresholds] = FaceThresholds(match=0.45, review=0.35)


def _face_recognition_models_dir() -> Path:
    """Folder of face_recognition_models' .dat files, found without importing the package.

    Importing it calls pkg_resources, which current setuptools no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise FaceModelError(
            "face_recognition_models is not installed; the dlib backend needs its bundled "
            f"{DLIB_SHAPE_PREDICTOR} and {DLIB_RECOGNISER}",
            missing=(DLIB_SHAPE_PREDICTOR, DLIB_RECOGNISER),
        )
    if spec.submodule_search_locations:
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        package_dir = Path(spec.origin).parent
    else:  # pragma: no cover - a namespace package without locations does not occur
        raise FaceModelError("cannot locate the face_recognition_models package folder")
    return package_dir / "models"


class DlibBackend(FaceBackend):
    """dlib detection + ResNet recognition on CPU, all weights bundled and hash-pinned.

    Detection: dlib's HOG frontal detector proposes faces (``upsample`` doubles the image
    that many times so faces down to ~40 px at 1 are found). HOG alone also fires on
    face-like texture (on the astronaut photo, her suit's patch, scored ~0.1, as large as her
    face), which would wrongly make a portrait ambiguous, so with the CNN (mmod) detector
    available each proposal is confirmed by running the CNN on a small crop around it
    (~0.13 s per proposal) and kept only if the CNN finds an overlapping face. When nothing
    survives, the CNN scans the whole image (downscaled to ``cnn_fallback_max_side``): it
    also finds faces HOG misses, such as the cameraman's three-quarter view. ``cnn=False``
    gives plain HOG (fast, for bulk frames where a spurious box is acceptable).

    Recognition: the 5-point shape predictor aligns a 150x150 chip (dlib's get_face_chip
    alignment inside ``compute_face_descriptor``) and the ResNet maps it to 128 values.
    """

    #: the crop around a proposal is rescaled so the face is this many pixels wide: the CNN
    #: finds faces from ~80 px without upsampling, and a small crop keeps confirmation cheap.
    _CONFIRM_FACE_SIZE: Final[int] = 100
    _CONFIRM_MIN_IOU: Final[float] = 0.3

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        expected_sha256: Mapping[str, str] | None = None,
        upsample: int = 1,
        cnn: bool | None = None,
        cnn_fallback_max_side: int = 1024,
        num_jitters: int = 0,
    ) -> None:
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        if num_jitters < 0:
            raise ValueError("num_jitters must be >= 0")
        folder = Path(model_dir) if model_dir is not None else _face_recognition_models_dir()
        expected = dict(DLIB_MODEL_SHA256 if expected_sha256 is None else expected_sha256)
        # The CNN file is optional: used when present unless turned off, required if asked for.
        use_cnn = (folder / DLIB_CNN_DETECTOR).is_file() if cnn is None else cnn
        required = [DLIB_SHAPE_PREDICTOR, DLIB_RECOGNISER]
        if use_cnn:
            required.append(DLIB_CNN_DETECTOR)
        hashes, _ = _verify_model_files(folder, required, expected)

        import dlib  # lazily: importing faces.py must stay cheap

        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._shape_predictor = dlib.shape_predictor(str(folder / DLIB_SHAPE_PREDICTOR))
        self._recogniser = dlib.face_recognition_model_v1(str(folder / DLIB_RECOGNISER))
        self._cnn = (
            dlib.cnn_face_detection_model_v1(str(folder / DLIB_CNN_DETECTOR)) if use_cnn else None
        )
        # dlib's DNN objects keep per-call scratch buffers: serialise calls from threads.
        self._lock = threading.Lock()
        self.upsample = upsample
        self.cnn_fallback_max_side = cnn_fallback_max_side
        self.num_jitters = num_jitters
        self.model_dir = folder
        self.info = BackendInfo(
            name="dlib",
            metric="euclidean",
            thresholds=DLIB_THRESHOLDS,
            embedding_dim=128,
            fingerprint=fingerprint_of("dlib", hashes),
            files=hashes,
            licence=DLIB_LICENCE,
            config={
                "detector": "hog+mmod" if use_cnn else "hog",
                "upsample": upsample,
                "cnn_fallback_max_side": cnn_fallback_max_side if use_cnn else None,
                "num_jitters": num_jitters,
            },
        )

    # -- detection ----------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        rgb = to_rgb_uint8(image)
        height, width = rgb.shape[:2]
        with self._lock:
            rects, scores, _ = self._hog.run(rgb, self.upsample, 0.0)
            proposals = [
                (self._rect_to_box(rect).clipped(width, height), float(score))
                for rect, score in zip(rects, scores, strict=True)
            ]
            if self._cnn is None:
                found = [(box, score, "dlib-hog") for box, score in proposals]
            else:
                found = [
                    (box, score, "dlib-hog+mmod")
                    for box, score in proposals
                    if box.area > 0 and self._confirm_with_cnn(rgb, box)
                ]
                if not found:
                    found = [(box, score, "dlib-mmod") for box, score in self._cnn_scan(rgb)]
            detections = [
                FaceDetection(
                    box=box,
                    score=score,
                    source=source,
                    landmarks=self._landmarks(rgb, box),
                    landmark_scheme="dlib5",
                )
                for box, score, source in found
                if box.area > 0
            ]
        return _sorted_largest_first(detections)

    def _confirm_with_cnn(self, rgb: np.ndarray, box: FaceBox) -> bool:
        """True when the CNN finds a face overlapping ``box`` in a crop around it."""
        import cv2

        assert self._cnn is not None
        height, width = rgb.shape[:2]
        side = max(box.width, box.height)
        margin = side / 2
        x0, y0 = max(0, int(box.x0 - margin)), max(0, int(box.y0 - margin))
        x1 = min(width, int(math.ceil(box.x1 + margin)))
        y1 = min(height, int(math.ceil(box.y1 + margin)))
        crop = rgb[y0:y1, x0:x1]
        scale = self._CONFIRM_FACE_SIZE / side
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        crop = np.ascontiguousarray(cv2.resize(crop, size, interpolation=interpolation))
        for hit in self._cnn(crop, 0):
            found = self._rect_to_box(hit.rect)
            mapped = FaceBox(
                found.x0 / scale + x0,
                found.y0 / scale + y0,
                found.x1 / scale + x0,
                found.y1 / scale + y0,
            )
            if mapped.iou(box) >= self._CONFIRM_MIN_IOU:
                return True
        return False

    def _cnn_scan(self, rgb: np.ndarray) -> list[tuple[FaceBox, float]]:
        """The CNN over the whole image; large images are downscaled to bound the cost."""
        import cv2

        assert self._cnn is not None
        height, width = rgb.shape[:2]
        scale = min(1.0, self.cnn_fallback_max_side / max(height, width))
        scanned = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            scanned = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
        results = []
        for hit in self._cnn(scanned, 0):
            found = self._rect_to_box(hit.rect)
            box = FaceBox(found.x0 / scale, found.y0 / scale, found.x1 / scale, found.y1 / scale)
            results.append((box.clipped(width, height), float(hit.confidence)))
        return results

    @staticmethod
    def _rect_to_box(rect: Any) -> FaceBox:
        # dlib rectangles are inclusive: right/bottom are the last pixel inside the face.
        return FaceBox(
            float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1)
        )

    def _box_to_rect(self, box: FaceBox) -> Any:
        return self._dlib.rectangle(
            round(box.x0), round(box.y0), round(box.x1) - 1, round(box.y1) - 1
        )

    def _landmarks(self, rgb: np.ndarray, box: FaceBox) -> tuple[tuple[float, float], ...]:
        shape = self._shape_predictor(rgb, self._box_to_rect(box))
        return tuple((float(shape.part(i).x), float(shape.part(i).y)) for i in range(5))

    # -- recognition --------------------------------------------------------------------

    def embed(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        rgb = to_rgb_uint8(image)
        with self._lock:
            # Landmarks are recomputed from the box rather than trusted from the detection,
            # so a detection from any source (or built by hand) is aligned the same way.
            shape = self._shape_predictor(rgb, self._box_to_rect(detection.box))
            descriptor = self._recogniser.compute_face_descriptor(rgb, shape, self.num_jitters)
        return np.asarray(descriptor, dtype=np.float32)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        va, vb = _as_vector(a, 128), _as_vector(b, 128)
        return float(1.0 - np.linalg.norm(va - vb))


# --------------------------------------------------------------------------------------
# insightface (buffalo_l-style SCRFD + ArcFace)
# --------------------------------------------------------------------------------------

INSIGHTFACE_DETECTOR: Final[str] = "det_10g.onnx"
INSIGHTFACE_RECOGNISER: Final[str] = "w600k_r50.onnx"
INSIGHTFACE_MANIFEST: Final[str] = "manifest.json"

INSIGHTFACE_LICENCE: Final[str] = (
    "insightface pretrained model packs (buffalo_l: SCRFD det_10g, ArcFace w600k_r50): "
    "non-commercial research only; insightface library code: MIT."
)

#: Cosine defaults for ArcFace (w600k_r50). Genuine pairs typically score 0.5-0.8 and
#: impostors cluster around 0 with a spread of about 0.1; insightface's own tooling uses 0.4
#: as its default recognition threshold, so that is the match line, and the 0.3-0.4 strip
#: (about three impostor spreads up, where poor-quality genuine pairs also fall) goes to a
#: human. Not measured here: no insightface weights are available on this machine.
INSIGHTFACE_THRESHOLDS: Final[FaceThresholds] = FaceThresholds(match=0.40, review=0.30)

#: ArcFace's canonical 5-point template for a 112x112 chip (insightface face_align).
_ARCFACE_TEMPLATE: Final[np.ndarray] = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def _similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping ``src`` points onto ``dst``; 2x3.

    This is what insightface's norm_crop computes through scikit-image's deprecated
    ``SimilarityTransform.estimate``; owning these few lines keeps the alignment identical
    without depending on an API that scikit-image is removing.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    d = np.ones(2)
    if np.linalg.det(covariance) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    variance = src_c.var(axis=0).sum()
    scale = float((singular * d).sum() / variance) if variance > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def _arcface_align(bgr: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The ArcFace chip: warp so the 5 landmarks land on the template scaled to ``size``."""
    import cv2

    if size % 112 == 0:
        template = _ARCFACE_TEMPLATE * (size / 112.0)
    else:  # 128-based templates shift x by 8 px at 128, as insightface does
        template = _ARCFACE_TEMPLATE * (size / 128.0)
        template[:, 0] += 8.0 * size / 128.0
    matrix = _similarity_transform(landmarks, template)
    return cv2.warpAffine(bgr, matrix, (size, size), borderValue=0.0)


def _read_manifest(folder: Path) -> dict[str, str] | None:
    """The folder's ``manifest.json`` as {file name: sha256}, None when there is none."""
    path = folder / INSIGHTFACE_MANIFEST
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FaceModelError(f"{path} is not readable JSON: {error}") from error
    return _validate_manifest(document, str(path))


def _validate_manifest(document: Any, where: str) -> dict[str, str]:
    # insightface >= 2 has its own, richer manifest.json format (manifest_version, tasks);
    # ours is a flat pin list, and mistaking one for the other must fail, not half-work.
    if not isinstance(document, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) and _SHA256_HEX.match(value.lower())
        for key, value in document.items()
    ):
        raise FaceModelError(
            f"{where} must map file names to 64-hex-digit sha256 values "
            '(e.g. {"det_10g.onnx": "<sha256>", "w600k_r50.onnx": "<sha256>"})'
        )
    return {key: value.lower() for key, value in document.items()}


def _constructor_accepts(cls: type, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False


class InsightFaceBackend(FaceBackend):
    """insightface SCRFD detection + ArcFace recognition on CPU from a local, pinned folder.

    ``model_dir`` holds a buffalo_l-style pair (``detector_file``, ``recogniser_file``). The
    expected SHA-256 values come from ``manifest`` (e.g. the model registry's pins) or, when
    it is None, from ``manifest.json`` in the folder; with neither, loading is refused. Every
    file is read once, checked, and the ONNX Runtime sessions are built from the verified
    bytes; insightface's model_zoo classes then wrap those sessions (they re-read the files
    only for graph metadata). Nothing here can download: insightface's ``get_model`` and
    ``FaceAnalysis``, which can, are never called.
    """

    def __init__(
        self,
        model_dir: str | Path,
        manifest: Mapping[str, str] | None = None,
        *,
        detector_file: str = INSIGHTFACE_DETECTOR,
        recogniser_file: str = INSIGHTFACE_RECOGNISER,
        det_size: tuple[int, int] = (640, 640),
        det_thresh: float = 0.5,
        nms_thresh: float = 0.4,
    ) -> None:
        folder = Path(model_dir)
        required = [detector_file, recogniser_file]
        if manifest is not None:
            expected = _validate_manifest(dict(manifest), "the passed manifest")
        elif folder.is_dir():
            found = _read_manifest(folder)
            if found is None:
                missing = [name for name in required if not (folder / name).is_file()]
                raise FaceModelError(
                    f"model folder {folder} has no {INSIGHTFACE_MANIFEST} and no manifest "
                    "was passed: refusing to load unpinned weights"
                    + (f"; also missing file(s): {', '.join(missing)}" if missing else ""),
                    missing=[INSIGHTFACE_MANIFEST, *missing],
                )
            expected = found
        else:
            expected = {}
        hashes, contents = _verify_model_files(folder, required, expected, keep_bytes=True)

        # Lazily, and insightface first: it configures ONNX Runtime before importing it.
        import insightface.model_zoo.arcface_onnx as arcface_onnx
        import insightface.model_zoo.scrfd as scrfd
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        try:
            det_session = onnxruntime.InferenceSession(contents[detector_file], providers=providers)
            rec_session = onnxruntime.InferenceSession(
                contents[recogniser_file], providers=providers
            )
        except Exception as error:  # noqa: BLE001 - ORT raises several unrelated types
            raise FaceModelError(
                f"ONNX Runtime could not load {detector_file} / {recogniser_file} from "
                f"{folder}: {error}"
            ) from error
        del contents  # the sessions own their copy; do not keep ~180 MB alive twice

        detector_kwargs: dict[str, Any] = {}
        # insightface >= 2 would otherwise rebuild a per-resolution session by re-reading the
        # file from disk, bypassing the verified bytes; one dynamic session is all we need.
        if _constructor_accepts(scrfd.SCRFD, "static_shape_sessions"):
            detector_kwargs["static_shape_sessions"] = False
        detector = scrfd.SCRFD(
            model_file=str(folder / detector_file), session=det_session, **detector_kwargs
        )
        if len(detector.output_names) not in (9, 15) or not detector.use_kps:
            raise FaceModelError(
                f"{detector_file} is not an SCRFD detector with 5 keypoints "
                f"({len(detector.output_names)} outputs)"
            )
        detector.det_thresh = det_thresh
        detector.nms_thresh = nms_thresh
        recogniser = arcface_onnx.ArcFaceONNX(
            model_file=str(folder / recogniser_file), session=rec_session
        )
        output_shape = recogniser.output_shape
        embedding_dim = int(output_shape[-1]) if isinstance(output_shape[-1], int) else 512

        self._detector = detector
        self._recogniser = recogniser
        self._det_size = (int(det_size[0]), int(det_size[1]))
        self._chip_size = int(recogniser.input_size[0])
        self.model_dir = folder
        self.info = BackendInfo(
            name="insightface",
            metric="cosine",
            thresholds=INSIGHTFACE_THRESHOLDS,
            embedding_dim=embedding_dim,
            fingerprint=fingerprint_of("insightface", hashes),
            files=hashes,
            licence=INSIGHTFACE_LICENCE,
            config={
                "detector": "scrfd",
                "det_size": list(self._det_size),
                "det_thresh": det_thresh,
                "nms_thresh": nms_thresh,
            },
        )

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        rgb = to_rgb_uint8(image)
        height, width = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface works in OpenCV's BGR
        boxes, keypoints = self._detector.detect(bgr, input_size=self._det_size, max_num=0)
        detections = []
        for index, row in enumerate(boxes):
            box = FaceBox(float(row[0]), float(row[1]), float(row[2]), float(row[3]))
            box = box.clipped(width, height)
            if box.area <= 0:
                continue
            points = None
            if keypoints is not None:
                points = tuple((float(x), float(y)) for x, y in keypoints[index])
            detections.append(
                FaceDetection(
                    box=box,
                    score=float(row[4]),
                    source="insightface-scrfd",
                    landmarks=points,
                    landmark_scheme="arcface5" if points is not None else None,
                )
            )
        return _sorted_largest_first(detections)

    def embed(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        if detection.landmark_scheme != "arcface5" or detection.landmarks is None:
            raise ValueError(
                "the insightface backend aligns faces on SCRFD's five ArcFace landmarks; "
                f"this detection has landmark scheme {detection.landmark_scheme!r} "
                "(detect with the same backend that embeds)"
            )
        rgb = to_rgb_uint8(image)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        chip = _arcface_align(bgr, np.asarray(detection.landmarks), self._chip_size)
        vector = np.asarray(self._recogniser.get_feat(chip), dtype=np.float32).reshape(-1)
        return vector

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        va = _as_vector(a, self.info.embedding_dim)
        vb = _as_vector(b, self.info.embedding_dim)
        norms = float(np.linalg.norm(va) * np.linalg.norm(vb))
        if norms == 0.0:
            raise ValueError("cannot compare a zero embedding")
        return float(np.dot(va, vb) / norms)


# --------------------------------------------------------------------------------------
# Factory with a per-process cache
# --------------------------------------------------------------------------------------

_BACKENDS: Final[dict[str, Callable[..., FaceBackend]]] = {
    "dlib": DlibBackend,
    "insightface": InsightFaceBackend,
}
_CACHE: dict[tuple[str, tuple[tuple[str, Any], ...]], FaceBackend] = {}
_CACHE_LOCK = threading.Lock()


def _freeze(value: Any) -> Any:
    """A hashable, order-independent stand-in for an option value (cache keys only)."""
    if isinstance(value, Path):
        return ("path", str(value.expanduser().resolve()))
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("seq", tuple(_freeze(v) for v in value))
    return value


def face_backend_names() -> tuple[str, ...]:
    """The names :func:`get_face_backend` accepts."""
    return tuple(sorted(_BACKENDS))


def get_face_backend(name: str = "dlib", **options: Any) -> FaceBackend:
    """The backend ``name`` built with ``options``, loaded once per process and reused.

    Loading verifies hashes and deserialises weights (about a second for dlib), so workers
    share one instance per distinct configuration. Options are the backend's constructor
    arguments, e.g. ``get_face_backend("insightface", model_dir=path)``.
    """
    try:
        factory = _BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise ValueError(f"unknown face backend {name!r}; known: {known}") from None
    if "model_dir" in options and isinstance(options["model_dir"], str):
        options["model_dir"] = Path(options["model_dir"])
    key = (name, tuple(sorted((k, _freeze(v)) for k, v in options.items())))
    with _CACHE_LOCK:
        backend = _CACHE.get(key)
        if backend is None:
            # Built under the lock: two threads asking at once must not load twice.
            backend = factory(**options)
            _CACHE[key] = backend
        return backend


def clear_face_backend_cache() -> None:
    """Forget every cached backend (after model files are replaced, or between tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------------------
# Helpers for pre-checks and the leakage gate
# --------------------------------------------------------------------------------------


def find_single_face(
    image: np.ndarray,
    backend: FaceBackend,
    *,
    ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO,
) -> FaceDetection:
    """The one dominant face of ``image``.

    Raises :class:`NoFaceError` when there is none and :class:`MultipleFacesError` when
    other faces have an area of at least ``ambiguity_ratio`` times the largest one's (see
    :data:`DEFAULT_AMBIGUITY_RATIO`); smaller faces are background and ignored.
    """
    if not 0.0 < ambiguity_ratio <= 1.0:
        raise ValueError("ambiguity_ratio must be in (0, 1]")
    detections = backend.detect(image)
    if not detections:
        raise NoFaceError(f"no face found in the image ({backend.name} detector)")
    largest = detections[0]
    similar = [d for d in detections if d.area >= ambiguity_ratio * largest.area]
    if len(similar) > 1:
        background = len(detections) - len(similar)
        extra = f" (and {background} smaller one(s))" if background else ""
        raise MultipleFacesError(
            f"found {len(similar)} similarly large faces{extra}: each has at least "
            f"{ambiguity_ratio:.0%} of the largest face's area, so no single face is "
            "dominant; crop the image to the one person",
            count=len(similar),
            total=len(detections),
        )
    return largest


def embed_face(
    image: np.ndarray,
    backend: FaceBackend,
    *,
    detection: FaceDetection | None = None,
    ambiguity_ratio: float = DEFAULT_AMBIGUITY_RATIO,
) -> FaceEmbedding:
    """Embed the dominant face (or ``detection``) of ``image``, with its provenance."""
    rgb = to_rgb_uint8(image)
    if detection is None:
        detection = find_single_face(rgb, backend, ambiguity_ratio=ambiguity_ratio)
    return FaceEmbedding(
        vector=backend.embed(rgb, detection),
        detection=detection,
        backend=backend.info.name,
        fingerprint=backend.info.fingerprint,
    )


def embed_frames(
    frames: Iterable[np.ndarray],
    backend: FaceBackend,
    *,
    stride: int = 1,
) -> list[np.ndarray | None]:
    """Per-frame embedding of the largest face, None for a frame with no face.

    Every ``stride``-th frame is analysed (others are None too, and the list stays aligned
    with the input). The largest face is used rather than refusing ambiguous frames: in a
    rendered output the animated subject is the face that matters, and the leakage gate
    counts frames with no face separately.
    """
    if stride < 1:
        raise ValueError("stride must be >= 1")
    results: list[np.ndarray | None] = []
    for index, frame in enumerate(frames):
        if index % stride:
            results.append(None)
            continue
        rgb = to_rgb_uint8(frame)
        detections = backend.detect(rgb)
        results.append(backend.embed(rgb, detections[0]) if detections else None)
    return results


def _embedding_of(value: np.ndarray | FaceEmbedding, backend: FaceBackend) -> np.ndarray:
    if isinstance(value, FaceEmbedding):
        if value.fingerprint != backend.info.fingerprint:
            raise ValueError(
                "embedding was computed by a different model "
                f"({value.backend} {value.fingerprint[:12]}...) than "
                f"{backend.info.name} {backend.info.fingerprint[:12]}...: scores would mean nothing"
            )
        return value.vector
    array = np.asarray(value)
    if array.ndim == 1:
        return array
    return embed_face(array, backend).vector


def face_similarity(
    a: np.ndarray | FaceEmbedding,
    b: np.ndarray | FaceEmbedding,
    backend: FaceBackend,
) -> float:
    """Similarity (higher = more similar) of two faces given as embeddings or images.

    A 1-D array is an embedding from ``backend``; a 2-D or 3-D array is an image whose
    single dominant face is used (see :func:`find_single_face` for the errors).
    """
    return backend.similarity(_embedding_of(a, backend), _embedding_of(b, backend))


def compare_embeddings(
    a: np.ndarray | FaceEmbedding,
    b: np.ndarray | FaceEmbedding,
    backend: FaceBackend,
) -> FaceComparison:
    """Like :func:`face_similarity`, with the default band, metric and fingerprint."""
    return backend.compare(_embedding_of(a, backend), _embedding_of(b, backend))
