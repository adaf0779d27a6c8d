"""Vision stages against real (tiny, random-weight) transformers models built at test time:
CLIP and SigLIP relevance, the OWLv2 locator and its box coordinates, masking and crops."""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from judge.errors import InputError
from judge.images import load_image
from judge.models.scripted import ScriptedBackend
from judge.queries import relevance_query
from judge.vision import (
    ClipRelevance,
    Owlv2Locator,
    box_area_share,
    crop_box,
    fill_box,
    make_relevance,
    mean_colour,
)
from judge.vision.box import Box
from judge.vision.locator import best_boxes, to_pixel_boxes
from tests._tiny_clip import text_config, tokenizer, tower

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.timeout(120)

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)


# ---- tiny models, built once per session --------------------------------------------------


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision-models")
    tok = tokenizer()
    torch.manual_seed(0)
    dirs = {k: root / k for k in ("clip", "siglip", "owlv2")}

    clip = transformers.CLIPModel(
        transformers.CLIPConfig(
            text_config=text_config(len(tok), 32),
            vision_config=tower(image_size=32, patch_size=8),
            projection_dim=16,
        )
    )
    clip.save_pretrained(dirs["clip"])
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(dirs["clip"])
    tok.save_pretrained(dirs["clip"])

    siglip = transformers.SiglipModel(
        transformers.SiglipConfig(
            text_config=text_config(len(tok), 16),
            vision_config=tower(image_size=32, patch_size=8),
        )
    )
    siglip.save_pretrained(dirs["siglip"])
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(
        dirs["siglip"]
    )
    tok.save_pretrained(dirs["siglip"])

    owl = transformers.Owlv2ForObjectDetection(
        transformers.Owlv2Config(
            text_config=text_config(len(tok), 16),
            vision_config=tower(image_size=64, patch_size=16),
            projection_dim=32,  # OWLv2's class head needs it equal to the text width
        )
    )
    # Random box heads predict degenerate boxes; a zeroed last layer leaves OWLv2's box
    # bias, i.e. each patch's own grid cell: real, in-image boxes to map and compare.
    with torch.no_grad():
        owl.box_head.dense2.weight.zero_()
        owl.box_head.dense2.bias.zero_()
    owl.save_pretrained(dirs["owlv2"])
    transformers.Owlv2Processor(
        image_processor=transformers.Owlv2ImageProcessor(size={"height": 64, "width": 64}),
        tokenizer=tok,
    ).save_pretrained(dirs["owlv2"])
    return dirs


def _scene(size: tuple[int, int], square: tuple[int, int, int, int], colour=RED) -> Image.Image:
    image = Image.new("RGB", size, (235, 235, 235))
    image.paste(colour, square)
    return image


# ---- relevance --------------------------------------------------------------------------


def test_clip_scores_are_the_models_cosines(tiny_dirs: dict[str, Path]) -> None:
    scorer = ClipRelevance(tiny_dirs["clip"], "clip")
    assert scorer.kind == "clip"
    texts = ["a red square", "a blue circle on grass", "x"]
    image = _scene((64, 64), (10, 10, 30, 30))
    scores = scorer.score(image, texts)
    # Reference: CLIP's own forward, whose logits are logit_scale * cosine.
    model = transformers.CLIPModel.from_pretrained(tiny_dirs["clip"]).eval()
    proc = transformers.CLIPImageProcessor.from_pretrained(tiny_dirs["clip"])
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dirs["clip"])
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, pixel_values=proc(images=image, return_tensors="pt").pixel_values)
    expected = (out.logits_per_image[0] / model.logit_scale.exp()).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) == 3


def test_siglip_scores_are_the_models_cosines(tiny_dirs: dict[str, Path]) -> None:
    scorer = ClipRelevance(tiny_dirs["siglip"])  # kind read from the config
    assert scorer.kind == "siglip"
    texts = ["a red square", "grass"]
    image = _scene((32, 32), (4, 4, 20, 20))
    scores = scorer.score(image, texts)
    model = transformers.SiglipModel.from_pretrained(tiny_dirs["siglip"]).eval()
    proc = transformers.SiglipImageProcessor.from_pretrained(tiny_dirs["siglip"])
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dirs["siglip"])
    batch = tok(texts, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids=batch.input_ids,
            pixel_values=proc(images=image, return_tensors="pt").pixel_values,
        )
    # SigLIP: logits = cosine * exp(logit_scale) + logit_bias.
    expected = ((out.logits_per_image[0] - model.logit_bias) / model.logit_scale.exp()).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)


def test_text_embeddings_are_cached(
    tiny_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = ClipRelevance(tiny_dirs["clip"])
    calls: list[int] = []
    original = scorer._model.get_text_features

    def counting(**kw: Any) -> Any:
        calls.append(int(kw["input_ids"].shape[0]))
        return original(**kw)

    monkeypatch.setattr(scorer._model, "get_text_features", counting)
    first = scorer.score(_scene((32, 32), (0, 0, 8, 8)), ["a", "b"])
    second = scorer.score(_scene((32, 32), (0, 0, 8, 8)), ["b", "a", "c"])
    assert calls == [2, 1]  # only "c" was new
    assert second[:2] == pytest.approx(first[::-1], abs=1e-6)
    assert scorer.score(_scene((8, 8), (0, 0, 1, 1)), []) == []


def test_wide_image_is_padded_not_cropped(tiny_dirs: dict[str, Path]) -> None:
    # CLIP's centre crop would cut both ends of a 200 x 20 image; differences there must
    # still change the embedding.
    scorer = ClipRelevance(tiny_dirs["clip"])
    left = _scene((200, 20), (0, 0, 20, 20), RED)
    right = _scene((200, 20), (180, 0, 200, 20), RED)
    a, b = scorer.image_embedding(left), scorer.image_embedding(right)
    assert float(a @ b) < 0.9999
    crop = transformers.CLIPImageProcessor.from_pretrained(tiny_dirs["clip"])
    pa = crop(images=left, return_tensors="pt").pixel_values
    pb = crop(images=right, return_tensors="pt").pixel_values
    assert torch.equal(pa, pb)  # what centre-cropping would have seen: identical


def test_missing_hub_model_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as info:
        ClipRelevance("openai/clip-vit-base-patch16")
    text = str(info.value)
    assert "openai/clip-vit-base-patch16" in text and "--relevance clip:/path" in text
    assert "HF_HUB_OFFLINE" in text
    with pytest.raises(InputError, match="--locator /path"):
        Owlv2Locator("google/owlv2-base-patch16-ensemble")


def test_wrong_kind_is_refused(tiny_dirs: dict[str, Path]) -> None:
    with pytest.raises(InputError, match=r"is a siglip model; name it as siglip:"):
        ClipRelevance(tiny_dirs["siglip"], "clip")
    with pytest.raises(InputError, match=r"'owlv2' model, not CLIP or SigLIP"):
        make_relevance(f"clip:{tiny_dirs['owlv2']}")


def test_make_relevance_specs(tiny_dirs: dict[str, Path]) -> None:
    assert make_relevance("off") is None
    assert make_relevance("vlm") == "vlm"  # the engine asks the judge model itself
    scorer = make_relevance(f"siglip:{tiny_dirs['siglip']}")
    assert isinstance(scorer, ClipRelevance) and scorer.kind == "siglip"


def test_vlm_relevance_queries_share_the_prefix() -> None:
    from tests.test_relevance_topic import compiled

    image = _scene((16, 16), (0, 0, 4, 4))
    pairs = (("k", "a knife"), ("b", "blood"))
    rules = [compiled(name, topic, topic=topic) for name, topic in pairs]
    queries = [relevance_query(rule, image, "img1") for rule in rules]
    assert queries[0].instructions == queries[1].instructions != ""
    assert all(q.image is image and q.image_key == "img1" for q in queries)
    assert queries[0].question.endswith("Topic: a knife")
    backend = ScriptedBackend({("topic: a knife", "img1"): 0.9, ("topic: blood", "img1"): None})
    results = asyncio.run(backend.yes_no(queries))
    assert results[0].m == pytest.approx(0.9) and results[1].m is None
    assert backend.batches == 1  # one request for all rules of the image


# ---- locator ------------------------------------------------------------------------------


def test_locator_real_model_one_pass(tiny_dirs: dict[str, Path]) -> None:
    locator = Owlv2Locator(tiny_dirs["owlv2"])
    passes: list[int] = []
    forward = locator._model.forward

    def counting(*args: Any, **kw: Any) -> Any:
        passes.append(int(kw["input_ids"].shape[0]))
        return forward(*args, **kw)

    locator._model.forward = counting
    image = _scene((90, 40), (5, 5, 25, 25))
    found = locator.locate(image, ["square", "circle", "square", " "])
    assert passes == [2]  # one pass, the two distinct words as queries
    assert set(found) == {"square", "circle", " "} and found[" "] is None
    for word in ("square", "circle"):
        box = found[word]
        assert box is not None and box.label == word and 0.0 < box.confidence < 1.0
        assert 0 <= box.x0 < box.x1 <= 90 and 0 <= box.y0 < box.y1 <= 40
    assert locator.locate(image, []) == {}
    assert locator.locate(image, ["square"], min_confidence=1.0) == {"square": None}


def test_locator_matches_hf_post_processing(tiny_dirs: dict[str, Path]) -> None:
    # Our mapping must agree with transformers' own post-processing given the padded square.
    locator = Owlv2Locator(tiny_dirs["owlv2"])
    image = _scene((120, 50), (70, 10, 100, 40))
    inputs = locator._processor(
        text=[["a photo of a square"]],
        images=image,
        padding="max_length",
        truncation=True,
        max_length=16,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = locator._model(**inputs)
    side = max(image.size)
    hf = locator._processor.image_processor.post_process_object_detection(
        out, threshold=0.0, target_sizes=[(side, side)]
    )[0]
    ours = to_pixel_boxes(out.pred_boxes[0], image.size)
    clipped = hf["boxes"].clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, image.width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, image.height)
    assert torch.allclose(ours, clipped, atol=1e-3)
    # The locator's box: HF's most confident box among those with area inside the image.
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    assert 0 < int(inside.sum()) < len(inside)  # some boxes lie wholly in the padding
    best = int(hf["scores"].masked_fill(~inside, -1.0).argmax())
    box = locator.locate(image, ["square"])["square"]
    assert box is not None
    assert [box.x0, box.y0, box.x1, box.y1] == pytest.approx(clipped[best].tolist(), abs=1e-3)
    assert box.confidence == pytest.approx(float(hf["scores"][best]), abs=1e-5)


def test_query_template(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    assert Owlv2Locator(tiny_dirs["owlv2"]).query_template == "a photo of a {}"
    # A model trained on bare words records its template in its config.
    model = transformers.Owlv2ForObjectDetection.from_pretrained(tiny_dirs["owlv2"])
    model.config.judge_query_template = "{}"
    model.save_pretrained(tmp_path)
    transformers.Owlv2Processor.from_pretrained(tiny_dirs["owlv2"]).save_pretrained(tmp_path)
    locator = Owlv2Locator(tmp_path)
    assert locator.query_template == "{}"
    seen: list[list[int]] = []
    forward = locator._model.forward

    def spy(*args: Any, **kw: Any) -> Any:
        seen.extend(kw["input_ids"].tolist())
        return forward(*args, **kw)

    locator._model.forward = spy
    locator.locate(_scene((32, 32), (0, 0, 8, 8)), ["cat"])
    tok = locator._processor.tokenizer
    assert tok.decode(seen[0], skip_special_tokens=True).strip() == "cat"
    assert Owlv2Locator(tmp_path, query_template="an {} here").query_template == "an {} here"
    with pytest.raises(InputError, match="needs one"):
        Owlv2Locator(tmp_path, query_template="no slot")


@pytest.mark.parametrize(
    ("size", "norm", "expected"),
    [
        # wide 200 x 100: the padded square has side 200, so y scales by 200, not 100
        ((200, 100), (0.25, 0.25, 0.1, 0.1), (40, 40, 60, 60)),
        # tall 100 x 200
        ((100, 200), (0.25, 0.75, 0.1, 0.1), (40, 140, 60, 160)),
        # partly in the padding below a wide image: clipped at the image's bottom
        ((200, 100), (0.5, 0.5, 0.2, 0.2), (80, 80, 120, 100)),
    ],
)
def test_normalised_boxes_map_through_the_padded_square(
    size: tuple[int, int], norm: tuple[float, ...], expected: tuple[float, ...]
) -> None:
    logits = torch.tensor([[3.0], [-5.0]])
    boxes = torch.tensor([list(norm), [0.5, 0.5, 0.1, 0.1]])
    box = best_boxes(logits, boxes, size, ["thing"])["thing"]
    assert box is not None
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx(expected, abs=1e-4)
    assert box.confidence == pytest.approx(1 / (1 + math.exp(-3.0)))


def test_boxes_wholly_in_the_padding_are_not_detections() -> None:
    # Most confident box lies below a 200 x 100 image (y from 120 to 140): skipped.
    logits = torch.tensor([[5.0, 5.0], [1.0, -9.0]])
    boxes = torch.tensor([[0.5, 0.65, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]])
    found = best_boxes(logits, boxes, (200, 100), ["a", "b"], min_confidence=0.01)
    assert found["a"] is not None and found["a"].x0 == pytest.approx(10)
    assert found["b"] is None  # its only box in the image is under min_confidence


def _oracle(locator: Owlv2Locator) -> None:
    """Replace the model with an oracle that finds the red pixels in exactly the tensor the
    model would see (after the processor's padding and resizing), and reports their box
    normalised to that square input, as OWLv2 does."""
    proc = locator._processor.image_processor
    mean = torch.tensor(proc.image_mean).view(3, 1, 1)
    std = torch.tensor(proc.image_std).view(3, 1, 1)

    def forward(*, pixel_values: Any, input_ids: Any, **_: Any) -> Any:
        rgb = pixel_values[0] * std + mean
        red = (rgb[0] > 0.6) & (rgb[1] < 0.4) & (rgb[2] < 0.4)
        ys, xs = torch.nonzero(red, as_tuple=True)
        side = float(rgb.shape[-1])
        x0, x1 = float(xs.min()) / side, float(xs.max() + 1) / side
        y0, y1 = float(ys.min()) / side, float(ys.max() + 1) / side
        n = int(input_ids.shape[0])
        boxes = torch.tensor([[(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], [0.5] * 4])
        logits = torch.tensor([[4.0] * n, [-4.0] * n])
        return SimpleNamespace(logits=logits[None], pred_boxes=boxes[None])

    locator._model = forward  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("stored", "square", "orientation", "expected"),
    [
        ((160, 60), (100, 10, 140, 40), None, (100, 10, 140, 40)),  # wide, no EXIF
        ((60, 160), (10, 100, 40, 140), None, (10, 100, 40, 140)),  # tall, no EXIF
        # Orientation 6 (rotate 90 clockwise to display): stored 160 x 60 shows as 60 x 160;
        # a stored point (x, y) appears at (59 - y, x).
        ((160, 60), (100, 10, 140, 40), 6, (20, 100, 50, 140)),
        # Orientation 8 (rotate 90 anticlockwise): (x, y) appears at (y, 159 - x).
        ((160, 60), (100, 10, 140, 40), 8, (10, 20, 40, 60)),
    ],
)
def test_boxes_are_in_the_coordinates_the_model_sees(
    tiny_dirs: dict[str, Path],
    stored: tuple[int, int],
    square: tuple[int, int, int, int],
    orientation: int | None,
    expected: tuple[int, int, int, int],
) -> None:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    _scene(stored, square).save(buf, "PNG" if orientation is None else "JPEG", exif=exif)
    loaded = load_image(buf.getvalue())
    locator = Owlv2Locator(tiny_dirs["owlv2"])
    _oracle(locator)
    box = locator.locate(loaded.image, ["red square"])["red square"]
    assert box is not None
    # The processor works at 64 px for a 160 px side: 2.5 px per input pixel, plus JPEG
    # edges; anything wrong in the mapping is off by tens of pixels.
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx(expected, abs=6)
    # And the box really holds the red square in the loaded image.
    crop = np.asarray(loaded.image.crop((box.x0 + 3, box.y0 + 3, box.x1 - 3, box.y1 - 3)))
    assert crop[..., 0].mean() > 200 and crop[..., 1].mean() < 60


def test_extreme_sizes_score_and_locate(tiny_dirs: dict[str, Path]) -> None:
    scorer = ClipRelevance(tiny_dirs["clip"])
    locator = Owlv2Locator(tiny_dirs["owlv2"])
    for size in ((1, 1), (10_000, 10), (10, 3_000)):
        image = _scene(size, (0, 0, 1, 1))
        assert len(scorer.score(image, ["a red square"])) == 1
        box = locator.locate(image, ["square"])["square"]
        assert box is None or (box.x1 <= size[0] and box.y1 <= size[1])


# ---- masking and crops -------------------------------------------------------------------


def _checker(size: tuple[int, int]) -> Image.Image:
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    board = ((xx + yy) % 2 * 200 + 20).astype(np.uint8)
    return Image.fromarray(np.stack([board, board // 2, 255 - board], axis=-1))


def _box(x0: float, y0: float, x1: float, y1: float) -> Box:
    return Box(x0=x0, y0=y0, x1=x1, y1=y1, confidence=0.9, label="thing")


def test_fill_box_mean_fills_exactly_the_touched_pixels() -> None:
    image = _checker((20, 12))
    before = np.asarray(image).copy()
    out = fill_box(image, _box(2.5, 3.2, 6.1, 7.9))
    after = np.asarray(out)
    region = np.zeros(before.shape[:2], dtype=bool)
    region[3:8, 2:7] = True  # floor/ceil: x 2..6, y 3..7
    assert (after[region] == np.array(mean_colour(image))).all()
    assert (after[~region] == before[~region]).all()
    assert np.asarray(image).tolist() == before.tolist()  # the input is untouched


def test_fill_methods() -> None:
    image = _checker((30, 30))
    before = np.asarray(image)
    region = np.zeros(before.shape[:2], dtype=bool)
    region[5:15, 10:20] = True
    black = np.asarray(fill_box(image, _box(10, 5, 20, 15), "black"))
    assert (black[region] == 0).all() and (black[~region] == before[~region]).all()
    blur = np.asarray(fill_box(image, _box(10, 5, 20, 15), "blur"))
    assert (blur[~region] == before[~region]).all()
    # The checkerboard's detail is gone inside: neighbouring pixels now nearly agree.
    inside = blur[5:15, 10:20, 0].astype(int)
    assert (
        np.abs(np.diff(inside, axis=1)).mean()
        < 40
        < np.abs(np.diff(before[5:15, 10:20, 0].astype(int), axis=1)).mean()
    )
    with pytest.raises(ValueError, match="unknown fill method"):
        fill_box(image, _box(0, 0, 1, 1), "pink")  # type: ignore[arg-type]


def test_fill_box_outside_or_empty_changes_nothing() -> None:
    image = _checker((10, 10))
    for box in (_box(20, 20, 30, 30), _box(-5, -5, 0, 0), _box(4, 4, 4, 8)):
        assert np.array_equal(np.asarray(fill_box(image, box)), np.asarray(image))


def test_crop_small_box_keeps_context_and_minimum_side() -> None:
    image = _scene((200, 100), (100, 50, 104, 54))
    crop = crop_box(image, _box(100, 50, 104, 54))
    assert crop.size == (28, 28)
    arr = np.asarray(crop)
    red = (arr[..., 0] > 200) & (arr[..., 1] < 30)
    assert red.sum() == 16 and red[12:16, 12:16].all()  # the box, at the centre
    # At the corner the window slides inside the image instead of shrinking.
    assert crop_box(image, _box(0, 0, 3, 3)).size == (28, 28)
    assert crop_box(image, _box(197, 97, 200, 100)).size == (28, 28)
    # A large box gets 10% padding each side, clipped to the image.
    assert crop_box(image, _box(50, 20, 150, 70)).size == (120, 60)
    assert crop_box(image, _box(-10, -10, 300, 300)).size == (200, 100)
    # An image smaller than the minimum: the whole image.
    assert crop_box(Image.new("RGB", (10, 5)), _box(1, 1, 2, 2)).size == (10, 5)


def test_box_area_share() -> None:
    image = Image.new("RGB", (200, 100))
    assert box_area_share(_box(0, 0, 20, 10), image) == pytest.approx(0.01)
    assert box_area_share(_box(-50, -50, 100, 50), image) == pytest.approx(0.25)  # clipped
    assert box_area_share(_box(300, 0, 400, 10), (200, 100)) == 0.0


# ---- a real detection with the trained toy OWLv2 ---------------------------------------------


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may train the toy models first (once, then cached)
def test_toy_owlv2_finds_a_toy_object_in_cropped_and_rotated_images() -> None:
    import judge.toy
    from judge.toy import world

    # The toy OWLv2 was trained on bare words ("red square").
    locator = Owlv2Locator(judge.toy.ensure_toy_models().owlv2, query_template="{}")
    spec = world.SceneSpec(objects=(("red", "square", "large"),), text="", distractors=(0, 0))
    scene = world.make_scene(7, spec)
    assert scene.image is not None
    truth = scene.objects[0].box
    # The whole square scene first: if this fails, the toy model is too weak, not the mapping.
    box = locator.locate(scene.image, ["red square"])["red square"]
    if box is None or _iou((box.x0, box.y0, box.x1, box.y1), truth) <= 0.5:
        pytest.xfail("toy OWLv2 below target: it does not find the object in a plain scene")
    # A non-square crop that keeps the object, stored rotated with EXIF orientation 6 so
    # that only EXIF transposition restores it.
    x0, y0, x1, y1 = truth
    top = max(0, min(y0 - 20, world.SIDE - 170))
    crop = scene.image.crop((0, top, world.SIDE, top + 170))
    shifted = (x0, y0 - top, x1, y1 - top)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    crop.transpose(Image.Transpose.ROTATE_90).save(buf, "PNG", exif=exif)
    loaded = load_image(buf.getvalue())
    assert loaded.image.size == crop.size
    box = locator.locate(loaded.image, ["red square"])["red square"]
    assert box is not None and _iou((box.x0, box.y0, box.x1, box.y1), shifted) > 0.5
