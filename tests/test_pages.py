"""AppTest runs of the pages written around the result-set tables: overview, curves, statistics, classify."""

import re
import shutil

import numpy as np
from streamlit.testing.v1 import AppTest

from conftest import ROOT, TINY_CLASSES, make_photo, model_cards
from core.specs import MODEL_IDS, MODEL_SPECS


def page(name: str, results) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=120)
    at.session_state["artifacts"] = str(results)
    return at.run()


def test_overview_shows_every_model_with_intervals_and_the_reading(tiny_results):
    at = page("overview", tiny_results)
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["Model"]) == sorted(MODEL_SPECS[m].title for m in MODEL_IDS)
    # Issue 15, finding 2: every cell a formatted string, no None, no raw float, one decimal everywhere; the
    # figures in two tables (accuracy, cost), each narrow enough for a 1400 px screen.
    cost = at.dataframe[1].value
    assert sorted(cost["Model"]) == sorted(table["Model"]) and "Parameters" in cost and "Parameters" not in table
    for cells in (table.astype(str).to_numpy().ravel(), cost.astype(str).to_numpy().ravel()):
        assert not any(c in ("None", "nan") or re.fullmatch(r"-?\d+\.\d{4,}", c) for c in cells)
    for cell in table["Accuracy [95 % interval]"]:
        value, low, high = map(float, re.fullmatch(r"(\d+\.\d) % \[(\d+\.\d)–(\d+\.\d)\]", cell).groups())
        assert low <= value <= high
    assert all(re.fullmatch(r"\d+\.\d % \([−+]\d+\.\d pp\)", c) for c in table["Study acc. (Δ)"])
    assert len(table.columns) <= 9 and len(cost.columns) <= 5
    text = " ".join(m.value for m in at.markdown)
    assert "has the highest test accuracy" in text and "One test image is" in text
    assert at.get("download_button")


def test_overview_names_a_missing_model_and_shows_the_rest(tiny_results, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    shutil.rmtree(copy / "resnet50")
    at = page("overview", copy)
    assert not at.exception
    # Issue 15, finding 10: the model's folder is named as missing, not the first of its files.
    assert any("ResNet50 (fine-tuned)" in w.value and "its folder resnet50/ is missing" in w.value for w in at.warning)
    assert len(at.dataframe[0].value) == 5


def test_no_result_set_explains_how_to_make_one(tmp_path):
    at = page("overview", tmp_path / "nothing-here")
    assert not at.exception
    assert "No usable result set" in at.error[0].value
    assert "scripts/train.py" in at.code[0].value
    assert "start the app again" not in " ".join(m.value for m in at.markdown)  # no restart is needed
    assert "no restart needed" in " ".join(m.value for m in at.markdown)


def test_a_blank_typed_folder_is_not_reported_as_a_nameless_folder(tiny_results):
    at = page("overview", tiny_results)
    at.text_input(key="typed_result_set").set_value("   ").run()
    assert not at.exception and not at.error
    shown = [m.value for m in (*at.warning, *at.error)]
    assert not any(" :" in text or ":  " in text or "is not a folder" in text for text in shown), shown
    assert len(at.dataframe[0].value) == 6  # the chosen set is still shown


def drawn(at) -> dict:
    """The curves page's figure as Plotly received it."""
    import json

    return json.loads(at.get("plotly_chart")[0].proto.spec)


def values(array) -> np.ndarray:
    """A trace's x or y: Plotly 6+ sends arrays as {"dtype", "bdata"} (base64 of the raw values)."""
    import base64

    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), array["dtype"])
    return np.asarray(array, float)


def test_curves_respond_to_metric_smoothing_and_axis(tiny_results):
    from core import artifacts, comparison

    history = artifacts.open_result_set(tiny_results).history("cnn")
    curve = lambda figure, split="validation": next(
        t for t in figure["data"] if t.get("name") == f"{MODEL_SPECS['cnn'].title} · {split}")
    at = page("curves", tiny_results)
    assert not at.exception
    assert np.allclose(values(curve(drawn(at))["y"]), history["val_loss"])
    at.radio[0].set_value("accuracy").run()
    figure = drawn(at)
    assert figure["layout"]["yaxis"]["title"]["text"] == "accuracy"
    assert np.allclose(values(curve(figure)["y"]), history["val_accuracy"])
    at.slider[0].set_value(0.6).run()
    smoothed = values(curve(drawn(at), "train")["y"])  # the tiny set's training accuracy moves; validation may not
    assert np.allclose(smoothed, comparison.ema(history["accuracy"], 0.6))
    assert not np.allclose(smoothed, history["accuracy"])
    at.radio[1].set_value("elapsed time").run()
    figure = drawn(at)
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("elapsed training minutes")
    assert np.allclose(values(curve(figure)["x"]), history["elapsed_seconds"] / 60)
    at.multiselect[0].set_value(["cnn", "vgg16"]).run()
    assert not at.exception
    named = {t["name"].split(" · ")[0] for t in drawn(at)["data"] if t.get("name")}
    assert named == {MODEL_SPECS["cnn"].title, MODEL_SPECS["vgg16"].title}
    assert "cosine" not in at.caption[-1].value  # the study's recipe: every model stops early


def test_curves_say_when_a_cosine_run_was_not_stopped_early():
    at = page("curves", ROOT / "artifacts")  # the tuned recipe: the CNNs run their cosine schedule to its end
    assert not at.exception and "a model with a cosine schedule ran to its end" in at.caption[-1].value
    at.multiselect[0].set_value(["vgg16", "resnet50"]).run()
    assert "cosine" not in at.caption[-1].value


def test_statistics_lists_a_verdict_for_every_pair(tiny_results):
    at = page("statistics", tiny_results)
    assert not at.exception
    block = next(m.value for m in at.markdown if m.value.startswith("- ") and " vs " in m.value)
    assert len(block.splitlines()) == 15  # 6 models, every pair once
    assert len(at.dataframe[0].value) == 6


def test_classify_shows_six_results_for_a_sample(tiny_results):
    at = page("classify", tiny_results)
    assert not at.exception
    assert model_cards(at) == []  # nothing chosen yet
    at.selectbox[0].set_value(0).run()
    assert not at.exception
    assert len(model_cards(at)) == 6
    assert verdict(at)
    # Issue 15: the result names its photo (it shows under every tab), the sample label says where the photo
    # came from, the group reads as a sum over classes, and the Grad-CAM target is off in Attention mode.
    assert at.subheader[0].value.startswith("Result for the sample ") and "(dataset folder " in at.subheader[0].value
    assert not any(m.value.endswith("…") for m in at.info)
    text = " ".join(m.value for m in at.markdown)
    assert "classes together" in text and "a **vegetable**" not in text and "a **fruit**" not in text
    at.slider[0].set_value(0.8).run()
    assert not at.selectbox[1].disabled
    at.radio[0].set_value("Attention").run()
    assert not at.exception
    assert at.selectbox[1].disabled


def test_classify_uses_the_test_time_views_validation_took_when_asked(tiny_data, tiny_results, tmp_path):
    from core import artifacts, testtime

    assert not page("classify", tiny_results).toggle  # no views measured: no switch
    copy = tmp_path / "copy"
    shutil.copytree(tiny_results, copy)
    testtime.measure_views(artifacts.open_result_set(copy), tiny_data, model_ids=["cnn"], progress=False)
    # Whatever the tiny validation split chose, take the five crops, as a real set's validation may.
    rs = artifacts.open_result_set(copy)
    metrics = rs.metrics("cnn")
    metrics[artifacts.TEST_TIME_VIEWS]["chosen"] = "five crops"
    with artifacts.ResultSetWriter(copy, rs.config).model_folder("cnn", keep_existing=True) as folder:
        artifacts.write_json(folder / artifacts.METRICS, metrics)
    at = page("classify", copy)
    at.selectbox[0].set_value(0).run()
    assert not at.exception and at.toggle[0].label == f"Test-time views (1 of {len(MODEL_IDS)} models)"
    cnn_card = lambda: next(m.value for m in at.markdown if m.value.startswith(f"**{MODEL_SPECS['cnn'].title}**"))
    alone = cnn_card()
    assert not [c for c in at.caption if "views" in c.value]
    at.toggle[0].set_value(True).run()
    assert not at.exception
    assert [c.value for c in at.caption if c.value.startswith("views averaged")] == ["views averaged: five crops"]
    assert any(c.value.startswith(f"Test-time views: 1 of {len(MODEL_IDS)} models answer") for c in at.caption)
    assert cnn_card() != alone  # its answer is now the crops' average (a class or a percentage changes)


def verdict(at) -> str:
    """The headline, checked against the average it must not contradict."""
    text = next(m.value for m in at.markdown if m.value.startswith(("**All", "**No", "**1", "**2", "**3", "**4", "**5")))
    assert at.metric[0].label == "Models agreeing with the average"
    return text


def _png(colour, seed, size=100) -> bytes:
    import io

    buffer = io.BytesIO()
    make_photo(colour, np.random.default_rng(seed), size=size).save(buffer, "PNG")
    return buffer.getvalue()


def test_classify_upload_gives_six_results_and_survives_a_bad_file(tiny_results):
    at = page("classify", tiny_results)
    at.file_uploader[0].set_value(("carrot.png", _png(TINY_CLASSES["carrot"], 3), "image/png")).run()
    assert not at.exception
    assert verdict(at) and at.subheader[0].value == "Result for the uploaded file carrot.png"
    assert len(model_cards(at)) == 6
    at.file_uploader[0].set_value(("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg")).run()
    assert not at.exception
    assert len(at.error) == 1 and "cannot be classified" in at.error[0].value and "\n" not in at.error[0].value
    at.file_uploader[0].set_value(("peas.png", _png(TINY_CLASSES["peas"], 4), "image/png")).run()
    assert not at.exception and not at.error
    assert verdict(at) and len(model_cards(at)) == 6


def test_curves_empty_state_and_stars_on_the_smoothed_line(tiny_results):
    from core import artifacts, comparison

    at = page("curves", tiny_results)
    at.slider[0].set_value(0.9).run()
    figure = drawn(at)
    history = artifacts.open_result_set(tiny_results).history("cnn")
    best = artifacts.open_result_set(tiny_results).models["cnn"]["best_epoch"]
    star = next(t for t in figure["data"] if t.get("marker", {}).get("symbol") == "star")
    star_y = values(star["y"])
    smoothed = comparison.ema(history["val_loss"], 0.9)[list(history["epoch"]).index(best)]
    assert abs(star_y[0] - smoothed) < 1e-9  # issue 15, finding 6: the star sits on the line as drawn
    at.multiselect[0].set_value([]).run()
    assert not at.exception and not at.get("plotly_chart")
    assert "Choose at least one model" in at.info[0].value


def test_statistics_explains_the_chart_and_has_an_empty_state(tiny_results):
    at = page("statistics", tiny_results)
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Bars" not in text and "dot's size" in text and "Temperature scaling" in text
    # Every model of the set has a temperature: the chart and table show the scaled figures first.
    assert at.radio[0].value == "temperature-scaled"
    shown = at.dataframe[-1].value
    assert {"temperature", "ece", "ece_scaled"} <= set(shown.columns) and shown["temperature"].notna().all()
    def reliability_chart():
        return next(c.proto.spec for c in at.get("plotly_chart") if "perfect calibration" in c.proto.spec)

    scaled_chart = reliability_chart()
    at.radio[0].set_value("as the models output them").run()
    assert not at.exception and reliability_chart() != scaled_chart
    at.multiselect[0].set_value([]).run()
    assert not at.exception and len(at.get("plotly_chart")) == 1 and len(at.dataframe) == 0
    assert "Choose at least one model" in at.info[0].value


def test_data_page_refuses_a_folder_that_is_not_a_dataset(tiny_results, tiny_data, tmp_path):
    for name in ("bad", "bars-hostile", "cache"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.jpg").write_bytes(b"not a photo")
    make_photo(TINY_CLASSES["carrot"], np.random.default_rng(0)).save(tmp_path / "bad" / "one.png")
    at = page("data", tiny_results)
    at.text_input[0].set_value(str(tmp_path)).run()
    assert not at.exception
    assert "does not look like a dataset" in at.error[0].value and not at.get("metric")  # issue 15, finding 8
    at.text_input[0].set_value(str(tiny_data)).run()
    assert not at.exception and not at.error and at.get("metric")
