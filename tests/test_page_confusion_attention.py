"""The confusion and attention pages, and the comparison functions behind them."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from core import artifacts, calibration, comparison, formatting, stats
from core.artifacts import ResultSet
from core.specs import MODEL_SPECS

# ---------------------------------------------------------------- comparison functions, known answers


def test_confusion_frame_reorders_and_shares_rows():
    counts = comparison.confusion_frame([[3, 1, 0], [0, 0, 0], [2, 0, 6]], ["b", "a", "c"], ["a", "b", "c"])
    assert list(counts.index) == list(counts.columns) == ["a", "b", "c"]
    assert counts.loc["b", "b"] == 3 and counts.loc["b", "a"] == 1 and counts.loc["c", "b"] == 2
    shares = comparison.row_shares(counts)
    assert shares.loc["b"].tolist() == [0.25, 0.75, 0.0]
    assert shares.loc["c", "c"] == pytest.approx(0.75)
    assert shares.loc["a"].isna().all()  # no test image of "a": no share, not zero
    cells = comparison.confusion_cells(counts)
    assert len(cells) == 9
    cell = cells[(cells["true"] == "c") & (cells["predicted"] == "b")].iloc[0]
    assert cell["count"] == 2 and cell["share"] == pytest.approx(0.25)


def test_group_breaks_mark_every_change_of_group():
    groups = {"apple": "fruit", "kiwi": "fruit", "corn": "vegetable", "peas": "vegetable"}
    assert comparison.group_breaks(["apple", "kiwi", "corn", "peas"], groups) == [2]
    assert comparison.group_breaks(["apple", "corn", "kiwi"], groups) == [1, 2]
    assert comparison.group_breaks(["apple"], groups) == []


def test_recall_difference_is_first_minus_second():
    first = pd.DataFrame({"class": ["a", "b"], "group": ["fruit", "vegetable"], "support": [4, 2],
                          "precision": [1.0, 0.5], "recall": [0.75, 0.5], "f1": [0.8, 0.5]})
    second = first.assign(recall=[0.25, 1.0])
    difference = comparison.recall_difference(first, second)
    assert difference["class"].tolist() == ["a", "b"]
    assert difference["difference"].tolist() == pytest.approx([0.5, -0.5])
    assert difference["recall_second"].tolist() == [0.25, 1.0]


@pytest.fixture
def table():
    """An ``image_table`` of four images and two models: x is right on 0 and 1, y on 0 and 2."""
    return pd.DataFrame({
        "file": ["f0", "f1", "f2", "f3"],
        "true": ["a", "a", "b", "b"],
        "x:pred": ["a", "a", "a", "a"], "x:conf": [0.9, 0.8, 0.7, 0.6], "x:correct": [True, True, False, False],
        "y:pred": ["a", "b", "b", "a"], "y:conf": [0.9, 0.8, 0.7, 0.6], "y:correct": [True, False, True, False],
    })


def test_right_only_and_cell_images(table):
    assert comparison.right_only(table, "x", "y")["file"].tolist() == ["f1"]
    assert comparison.right_only(table, "y", "x")["file"].tolist() == ["f2"]
    assert comparison.cell_images(table, "x", "b", "a")["file"].tolist() == ["f2", "f3"]
    assert comparison.cell_images(table, "y", "a", "b")["file"].tolist() == ["f1"]
    assert comparison.cell_images(table, "y", "b", "b")["file"].tolist() == ["f2"]


def test_choose_images_combines_filters(table):
    assert comparison.choose_images(table)["file"].tolist() == ["f0", "f1", "f2", "f3"]
    assert comparison.choose_images(table, true_class="b")["file"].tolist() == ["f2", "f3"]
    assert comparison.choose_images(table, model_id="y", correct=False)["file"].tolist() == ["f1", "f3"]
    assert comparison.choose_images(table, disagree=True)["file"].tolist() == ["f1", "f2"]
    assert comparison.choose_images(table, "a", "x", True, disagree=True)["file"].tolist() == ["f1"]
    assert comparison.choose_images(table, model_id="x")["file"].tolist() == ["f0", "f1", "f2", "f3"]
    assert comparison.models_right(table).tolist() == [2, 1, 1, 0]


def test_sanity_table_marks_models_not_checked():
    sanity = comparison.sanity_table({
        "cnn": {"sanity": {"gradcam_rank_correlation": 0.2, "passes": True, "threshold": 0.5}},
        "vgg16": {"sanity": {"gradcam_rank_correlation": 0.9, "passes": False}},
        "resnet50": {"accuracy": 0.5},
        "resnet50_attention": {"sanity": {"gradcam_rank_correlation": -0.1, "absolute_rank_correlation": 0.3,
                                          "maps": "signed", "passes": True, "threshold": 0.5}},
    }).set_index("id")
    # A check stored before the signed maps compared the maps as shown, and has no figure of absolute values.
    assert sanity["signed_maps"].tolist() == [False, False, False, True]
    assert sanity.loc["resnet50_attention", "absolute_rank_correlation"] == 0.3
    assert np.isnan(sanity.loc["cnn", "absolute_rank_correlation"])
    sanity = sanity.drop("resnet50_attention")
    assert sanity["checked"].tolist() == [True, True, False]
    assert sanity["passes"].tolist() == [True, False, False]
    assert sanity.loc["vgg16", "gradcam_rank_correlation"] == 0.9
    assert np.isnan(sanity.loc["resnet50", "gradcam_rank_correlation"])


def test_test_photos_come_from_the_dataset_else_the_samples(tmp_path):
    data, results = tmp_path / "data", tmp_path / "results"
    (data / "test" / "apple").mkdir(parents=True)
    (results / "samples" / "apple").mkdir(parents=True)
    Image.new("RGB", (300, 200), "red").save(data / "test" / "apple" / "Image_1.jpg")
    Image.new("RGB", (300, 200), "green").save(results / "samples" / "apple" / "test__apple__Image_2.jpg")
    (data / "test" / "apple" / "Image_3.jpg").write_bytes(b"not a photo")
    rs = ResultSet(results, {"dataset_summary": {"root": str(data)}})
    assert comparison.find_test_photo(rs, "test/apple/Image_1.jpg", "apple") == data / "test" / "apple" / "Image_1.jpg"
    assert comparison.find_test_photo(rs, "test/apple/Image_2.png", "apple") == results / "samples" / "apple" / "test__apple__Image_2.jpg"
    assert comparison.find_test_photo(rs, "test/apple/Image_9.jpg", "apple") is None
    assert comparison.find_test_photo(ResultSet(results, {}), "test/apple/Image_2.jpg", "apple") is not None
    photo = comparison.read_test_photo(rs, "test/apple/Image_1.jpg", "apple", 150)
    assert photo.size == (150, 100) and photo.getpixel((5, 5))[0] > 200
    assert comparison.read_test_photo(rs, "test/apple/Image_3.jpg", "apple", 150) is None  # unreadable
    assert comparison.read_test_photo(rs, "test/apple/Image_9.jpg", "apple", 150) is None  # absent


# ---------------------------------------------------------------- the pages on the tiny result set


def page(name: str, results, **state) -> AppTest:
    """The page run once on ``results``, with the session state (widget values by key) given."""
    at = AppTest.from_file(ROOT / "views" / f"{name}.py", default_timeout=60)
    at.session_state["artifacts"] = str(results)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def tile_count(n: int) -> int:
    """Tiles in one grid of the confusion page for ``n`` images: it draws at most 12 (its MOST_TILES)."""
    return min(int(n), 12)


def test_per_class_recall_carries_its_wilson_interval():
    rs = artifacts.open_result_set(ROOT / "artifacts")
    table = comparison.per_class_table(rs, "resnet50")
    assert table["support"].sum() == rs.metrics("resnet50")["n"] and (table["support"] > 0).all()
    for row in table.itertuples():
        found = round(row.recall * row.support)
        assert (row.recall_low, row.recall_high) == pytest.approx(stats.wilson_interval(found, row.support))
        assert row.recall_low <= row.recall <= row.recall_high
    # About ten photos a class: even a class found in full has an interval reaching far below 100 %.
    assert table.loc[table["recall"] == 1.0, "recall_low"].max() < 0.85


def test_confusion_page(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    confusions = {m: np.array(rs.metrics(m)["confusion"]) for m in rs.models}
    model_id = max(confusions, key=lambda m: confusions[m].sum() - np.trace(confusions[m]))
    preds = {m: rs.predictions(m) for m in rs.models}
    names = np.array(rs.class_names)

    at = page("confusion", tiny_results)
    assert not at.exception
    at.selectbox(key="confusion_model").select(model_id).run()
    at.toggle(key="confusion_normalised").set_value(False).run()
    assert not at.exception

    # The list of pairs: every off-diagonal cell with images, largest first.
    off = confusions[model_id] - np.diag(np.diag(confusions[model_id]))
    listed = at.dataframe[0].value
    assert listed["count"].tolist() == sorted(off[off > 0].tolist(), reverse=True)[:10]
    pair_box = at.selectbox(key="confusion_pair")
    assert len(pair_box.options) == int((off > 0).sum())
    true, predicted = listed.iloc[-1][["true", "predicted"]]
    pair_box.select((true, predicted)).run()
    assert not at.exception
    assert any(f"predicted as **{predicted}**" in m.value for m in at.markdown)

    # The tiles: the chosen cell, then each model's images that the other gets wrong.
    other_id = at.selectbox(key="confusion_other").value
    in_cell = (names[preds[model_id].y_true] == true) & (names[preds[model_id].y_pred] == predicted)
    only_one = preds[model_id].correct & ~preds[other_id].correct
    only_other = preds[other_id].correct & ~preds[model_id].correct
    expected = tile_count(in_cell.sum()) + tile_count(only_one.sum()) + tile_count(only_other.sum())
    assert len(at.image) == expected
    tabs = [t.label for t in at.tabs]
    assert tabs[0].endswith(f"({only_one.sum()})") and tabs[1].endswith(f"({only_other.sum()})")
    paired = formatting.p_value(stats.mcnemar_exact(preds[model_id].correct, preds[other_id].correct).p_value)
    assert any(f"only (exact McNemar test: {paired})" in m.value for m in at.markdown)
    per_class = next(d.value for d in at.dataframe if "recall_interval" in d.value.columns)
    assert all(text.endswith(" %") and "–" in text for text in per_class["recall_interval"])
    # Each tile lists all six models' predictions.
    prediction_lines = [c.value for c in at.caption if all(MODEL_SPECS[m].title in c.value for m in rs.models)]
    assert len(prediction_lines) == expected

    # A click on a cell stores it as the chosen pair (the chart's selection callback); a diagonal cell, which the
    # list of confusions lacks, then shows the images the model gets right.
    at = page("confusion", tiny_results, confusion_model=model_id, confusion_other=other_id,
              confusion_pair=(names[0], names[0]))
    assert not at.exception
    assert at.selectbox(key="confusion_pair").value == (names[0], names[0])
    right_first = (preds[model_id].y_true == 0) & preds[model_id].correct
    assert len(at.image) == tile_count(right_first.sum()) + tile_count(only_one.sum()) + tile_count(only_other.sum())

    # Issue 15, finding 5: another model starts without the previous model's pair and its caption.
    at.selectbox(key="confusion_model").select(other_id).run()
    assert not at.exception
    assert at.selectbox(key="confusion_pair").value != (names[0], names[0])
    assert not any("No test images" in c.value for c in at.caption)


def test_attention_page(tiny_results, monkeypatch):
    rs = artifacts.open_result_set(tiny_results)
    attention_models = [m for m in rs.models if rs.models[m]["attention"]]
    preds = rs.predictions("cnn")

    at = page("attention", tiny_results)
    assert not at.exception
    assert len(at.image) == 1 + len(rs.models) + len(attention_models)  # the photo, Grad-CAM, attention maps
    # Issue 15, finding 10: the photo is named by file and origin, and said to be in the test split now.
    first = comparison.image_table(rs, list(rs.models)).loc[at.selectbox(key="attention_image").value, "file"]
    assert at.image[0].captions[0].endswith(formatting.test_photo_origin(first)) and first not in at.image[0].captions[0]
    assert "test split" in at.image[0].captions[0]
    captions = [c for image in at.image for c in image.captions]
    for model_id in rs.models:
        assert any(MODEL_SPECS[model_id].title in c and "%" in c for c in captions), model_id
    checked = any("sanity" in rs.metrics(m) for m in rs.models)
    assert any("not been run" in i.value for i in at.info) != checked
    if checked:
        # One line of verdicts, the figures in a table: a row per checked model.
        sanity = comparison.sanity_table({m: rs.metrics(m) for m in rs.models})
        passing = int(sanity["passes"].sum())
        assert any(f"{passing} of {int(sanity['checked'].sum())} models checked pass" in m.value for m in at.markdown)
        table = at.dataframe[0].value
        assert list(table["Model"]) == [MODEL_SPECS[m].title for m in sanity.loc[sanity["checked"], "id"]]
        assert (table["Verdict"] == "pass").sum() == passing and (table["Maps compared"] == "before the ReLU").all()

    at.selectbox(key="attention_class").select("banana").run()
    at.selectbox(key="attention_judge").select("cnn").run()
    at.selectbox(key="attention_outcome").select("wrong").run()
    wrong_bananas = ((preds.y_true == rs.class_names.index("banana")) & ~preds.correct).sum()
    if wrong_bananas:
        options = at.selectbox(key="attention_image").options
        assert len(options) == wrong_bananas and all(o.startswith("banana") for o in options)
    else:
        assert at.warning and "No test image" in at.warning[0].value
    at.selectbox(key="attention_outcome").select("right or wrong").run()
    at.checkbox(key="attention_disagree").check().run()
    assert not at.exception

    at.checkbox(key="attention_disagree").uncheck().run()
    before = [image.value for image in at.image]
    at.slider(key="attention_opacity").set_value(0.9).run()
    at.toggle(key="attention_true").set_value(True).run()
    assert not at.exception
    assert any("Grad-CAM of the true class" in m.value for m in at.markdown)
    # Issue 15, finding 10: a true-class map of a wrong model says whose class it is of.
    row = comparison.image_table(rs, list(rs.models)).loc[at.selectbox(key="attention_image").value]
    for model_id in rs.models:
        if not row[f"{model_id}:correct"]:
            assert any(f"map of {row['true']}; it predicts" in c for image in at.image for c in image.captions)
    assert len(at.image) == 1 + len(rs.models) + len(attention_models)
    assert [image.value for image in at.image] != before

    # Without the photo (a clone without the dataset), the maps are drawn on a grey placeholder.
    monkeypatch.setattr(comparison, "read_test_photo", lambda *args: None)
    at.run()
    assert not at.exception
    assert "photo not here" in at.image[0].captions[0]


def test_a_flat_true_class_map_is_named_and_not_drawn_as_one_blue(tiny_results, tmp_path):
    """Issue 15, finding 10: a Grad-CAM with no region standing out read as "looked everywhere" in flat blue."""
    import shutil

    copy = tmp_path / "flat maps"
    shutil.copytree(tiny_results, copy)
    manifest = artifacts.read_json(copy / artifacts.MANIFEST)
    with np.load(copy / "cnn" / artifacts.MAPS) as stored:
        maps = {name: stored[name] for name in stored.files}
    maps["gradcam_true"] = np.zeros_like(maps["gradcam_true"])
    np.savez_compressed(copy / "cnn" / artifacts.MAPS, **maps)
    manifest["models"]["cnn"]["files"][artifacts.MAPS] = artifacts.sha256_file(copy / "cnn" / artifacts.MAPS)
    artifacts.write_json(copy / artifacts.MANIFEST, manifest)

    at = page("attention", copy, attention_true=True)
    assert not at.exception
    cnn = next(image for image in at.image if image.captions[0].startswith(("✓ CNN:", "✗ CNN:")))
    assert "flat map: no region raises this class" in cnn.captions[0]
    # Drawn as the photo itself (the same bytes, so the same media address) as above the maps, not a blue overlay.
    assert cnn.proto.imgs[0].url == at.image[0].proto.imgs[0].url
    drawn = [image for image in at.image[1:] if "flat map" not in image.captions[0]]
    assert drawn and all(image.proto.imgs[0].url != at.image[0].proto.imgs[0].url for image in drawn)


def test_the_confidence_shown_beside_a_map_is_the_one_classify_gives(tiny_results):
    rs = artifacts.open_result_set(tiny_results)
    table = comparison.image_table(rs, list(rs.models))
    tells_them_apart = False
    for model_id in rs.models:
        probs = rs.predictions(model_id).probs
        scaled = calibration.scale(probs, calibration.temperature(rs.metrics(model_id))).max(axis=1)
        np.testing.assert_allclose(table[f"{model_id}:conf"], scaled, rtol=1e-6)
        tells_them_apart |= not np.allclose(scaled, probs.max(axis=1), atol=1e-3)
    assert tells_them_apart  # some model of the tiny set has a temperature that moves its confidences


def test_the_attention_page_names_the_models_whose_stored_maps_are_of_the_logit(tiny_results, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    rs = artifacts.open_result_set(copy)
    text = lambda at: " ".join(m.value for m in at.markdown)
    assert "stored with the class's logit" not in text(page("attention", copy))
    # A set made before the maps took the log-probability: its maps say nothing of their target.
    metrics = rs.metrics("cnn")
    del metrics["gradcam_target"]
    with artifacts.ResultSetWriter(copy, rs.config).model_folder("cnn", keep_existing=True) as folder:
        artifacts.write_json(folder / artifacts.METRICS, metrics)
    at = page("attention", copy)
    assert not at.exception and "maps of CNN were stored with the class's logit" in text(at)
