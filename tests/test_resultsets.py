"""Comparing result sets, on the tiny trained set and copies of it relabelled as another split."""

import os
import shutil

import numpy as np
import pytest

from core import artifacts, resultsets


def relabelled_copy(src, dest, split, rename_tests=False, image_size=None):
    """A copy of a result set as if trained on another split; with rename_tests its test photos differ and,
    like the study's own split, do not cover every class (none of the first class is tested)."""
    shutil.copytree(src, dest)
    manifest = artifacts.read_json(dest / artifacts.MANIFEST)
    manifest["config"]["split"] = split
    if image_size:
        manifest["config"]["image_size"] = image_size
    if rename_tests:
        for model_id, entry in manifest["models"].items():
            path = dest / model_id / artifacts.PREDICTIONS
            with np.load(path) as data:
                arrays = dict(data)
            arrays["files"] = np.array([f"other/{f}" for f in arrays["files"]])
            arrays["y_true"] = arrays["y_true"][::-1].copy()  # another accuracy, on other photos
            tested = arrays["y_true"] != 0
            arrays = {k: v[tested] if len(v) == len(tested) else v for k, v in arrays.items()}
            artifacts.write_npz(path, **arrays)
            entry["files"][artifacts.PREDICTIONS] = artifacts.sha256_file(path)
    artifacts.write_json(dest / artifacts.MANIFEST, manifest)
    return dest


@pytest.fixture(scope="module")
def study_split(tiny_results, tmp_path_factory):
    return relabelled_copy(tiny_results, tmp_path_factory.mktemp("rs") / "kaggle", "kaggle", rename_tests=True)


@pytest.fixture(scope="module")
def same_photos(tiny_results, tmp_path_factory):
    return relabelled_copy(tiny_results, tmp_path_factory.mktemp("rs") / "again", "clean", image_size=64)


def test_discover_finds_artifacts_and_every_set_under_results(tiny_results, tmp_path):
    results = tmp_path / "results"
    relabelled_copy(tiny_results, results / "b", "kaggle")
    (results / "notes").mkdir()
    found = resultsets.discover([tiny_results, results])
    assert found == [tiny_results, results / "b"]


def test_names_say_what_differs_never_the_folder_alone(tiny_results, study_split, same_photos):
    cat = resultsets.open_sets([tiny_results, study_split, same_photos])
    assert list(cat.sets) == [
        "clean split · study recipe · 48 px",
        "kaggle split · study recipe · 48 px",
        "clean split · study recipe · 64 px",
    ]
    twice = resultsets.open_sets([tiny_results, relabelled_copy(tiny_results, study_split.parent / "x", "clean")])
    assert list(twice.sets) == ["clean split · study recipe (out)", "clean split · study recipe (x)"]


def test_a_folder_that_is_not_a_result_set_is_rejected_with_the_reason(tiny_results, tmp_path):
    cat = resultsets.open_sets([tiny_results, tmp_path, tiny_results])
    assert len(cat.sets) == 1
    assert "has no manifest.json" in cat.rejected[str(tmp_path)]


def test_accuracy_table_and_pivot_carry_wilson_intervals_and_the_study(tiny_results, study_split):
    sets = resultsets.open_sets([tiny_results, study_split]).sets
    table = resultsets.accuracy_table(sets)
    assert len(table) == 12
    row = table.iloc[0]
    rs = next(iter(sets.values()))
    correct = rs.predictions(row.model).correct
    assert row.accuracy == pytest.approx(correct.mean()) and row.low <= row.accuracy <= row.high
    wide = resultsets.pivot(table)
    assert list(wide.columns) == ["study (published)", *sets]
    assert wide.loc["resnet50", "study (published)"] == pytest.approx(0.9749)


def test_names_are_made_among_the_offered_sets_and_say_no_weights(tiny_results, study_split, tmp_path):
    stripped = shutil.copytree(tiny_results, tmp_path / "stripped")
    artifacts.strip_weights(stripped)
    alone = resultsets.open_sets([tiny_results])
    assert list(alone.sets) == ["clean split · study recipe"]
    # The chooser offers the stripped set too: the chosen one is named the same in the chooser and the tables.
    cat = resultsets.open_sets([tiny_results, study_split, tmp_path / "missing"], offered=[stripped, tiny_results])
    assert list(cat.sets) == ["clean split · study recipe", "kaggle split · study recipe"]
    assert list(cat.offered) == [*cat.sets, "clean split · study recipe · no weights"]
    assert list(cat.rejected) == [str(tmp_path / "missing")]


def test_names_count_seeds_per_model_not_the_most_any_model_has():
    # The shipped study-recipe set has one run of five models and three of ResNet50 + attention.
    from conftest import ROOT

    sets = [artifacts.open_result_set(ROOT / folder) for folder in ("artifacts", "results/clean-study")]
    runs = [{m: 1 + len(rs.replicate_seeds(m)) for m in rs.models} for rs in sets]
    assert set(runs[0].values()) == {3} and sorted(runs[1].values()) == [1, 1, 1, 1, 1, 3]
    assert resultsets.names(sets) == ["clean split · tuned recipe · 3 seeds",
                                      "clean split · study recipe · 1–3 seeds · no weights"]


def test_coverage_says_which_classes_the_test_split_covers(tiny_results, study_split, tmp_path):
    clean, study = artifacts.open_result_set(tiny_results), artifacts.open_result_set(study_split)
    photos, tested = clean.predictions("cnn").y_true.size, study.predictions("cnn").y_true.size
    assert str(resultsets.coverage(clean)) == f"{photos} test photos covering all 4 classes"
    assert str(resultsets.coverage(study)) == f"{tested} test photos covering only 3 of its 4 classes"
    # A set whose training is still running: no model yet, its test split read from the dataset record.
    early = shutil.copytree(tiny_results, tmp_path / "early")
    manifest = artifacts.read_json(early / artifacts.MANIFEST)
    manifest["models"] = {}
    artifacts.write_json(early / artifacts.MANIFEST, manifest)
    rs = artifacts.open_result_set(early)
    assert not rs.models and str(resultsets.coverage(rs)) == f"{photos} test photos covering all 4 classes"
    sets = resultsets.open_sets([tiny_results, early]).sets
    wide = resultsets.pivot(resultsets.accuracy_table(sets), order=sets)
    assert list(wide.columns[1:]) == list(sets) and wide.iloc[:, 2].isna().all()


def test_paired_only_where_the_test_photos_match(tiny_results, study_split, same_photos):
    sets = resultsets.open_sets([same_photos, study_split, tiny_results]).sets
    assert list(resultsets.ordered(sets)) == [
        "kaggle split · study recipe · 48 px", "clean split · study recipe · 64 px",
        "clean split · study recipe · 48 px"]
    diffs = resultsets.differences(sets)
    assert set(diffs.b) == {"clean split · study recipe · 64 px"}  # the first clean split with the study recipe
    assert len(diffs) == 12
    by_b = dict(zip(diffs.a, diffs.paired))
    assert by_b == {"kaggle split · study recipe · 48 px": False, "clean split · study recipe · 48 px": True}
    same = diffs[diffs.paired]
    assert (same.difference == 0).all() and (same.p_value == 1).all()  # identical predictions: no difference
    other = diffs[~diffs.paired].iloc[0]
    acc = {n: rs.predictions(other.model).correct.mean() for n, rs in sets.items()}
    assert other.difference == pytest.approx(acc[other.a] - acc[other.b])
    assert other.low < other.difference < other.high and (other.p_value is None or np.isnan(other.p_value))


def test_newcombe_interval_matches_published_example():
    # Newcombe (1998), table II example (a): 56/70 vs 48/80 -> 0.0524 to 0.3339
    low, high = resultsets.newcombe_interval(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=5e-4) and high == pytest.approx(0.3339, abs=5e-4)


def test_paired_bootstrap_is_centred_on_the_difference():
    rng = np.random.default_rng(1)
    a, b = rng.random(400) < 0.9, rng.random(400) < 0.7
    low, high = resultsets.paired_bootstrap_interval(a, b)
    assert low < a.mean() - b.mean() < high and high - low < 0.15


def test_leak_headline_needs_a_study_split_and_a_clean_split(tiny_results, study_split):
    clean_only = resultsets.open_sets([tiny_results]).sets
    assert resultsets.leak_headline(clean_only) is None
    sets = resultsets.open_sets([tiny_results, study_split]).sets
    leak = resultsets.leak_headline(sets)
    assert list(leak.a.unique()) == ["kaggle split · study recipe"] and len(leak) == 6
    assert list(leak.b.unique()) == ["clean split · study recipe"]
    study, clean = sets["kaggle split · study recipe"], sets["clean split · study recipe"]
    row = leak.iloc[0]  # how much the study's split flatters: its accuracy minus the clean split's
    assert row.difference == pytest.approx(
        study.predictions(row.model).correct.mean() - clean.predictions(row.model).correct.mean())
    assert not leak.paired.any() and (leak.low < leak.difference).all() and (leak.difference < leak.high).all()


def test_confusion_difference_is_over_shared_classes(tiny_results, same_photos, study_split):
    a, b, study = (artifacts.open_result_set(p) for p in (tiny_results, same_photos, study_split))
    rows, columns, diff = resultsets.confusion_difference(a, b, "cnn")
    assert rows == columns == a.class_names and np.allclose(diff, 0)
    rows, columns, diff = resultsets.confusion_difference(study, a, "cnn")
    assert rows == a.class_names[1:] and columns == a.class_names and diff.shape == (3, 4)
    assert np.allclose(diff.sum(axis=1), 0)  # each row: shares that sum to one, minus shares that do


def test_stripped_set_still_validates_and_says_which_models_have_weights(tiny_results, tmp_path):
    dest = shutil.copytree(tiny_results, tmp_path / "stripped")
    rs = artifacts.open_result_set(dest)
    assert all(rs.has_weights(m) for m in rs.models)
    removed = artifacts.strip_weights(dest)
    assert len(removed) == 6 and not list(dest.glob("*/model.keras")) and not list(dest.glob("*/top.weights.h5"))
    stripped = artifacts.open_result_set(dest)
    assert set(stripped.models) == set(rs.models) and not stripped.problems
    assert not any(stripped.has_weights(m) for m in stripped.models)
    assert resultsets.accuracy_table({"s": stripped}).shape[0] == 6


def _app(results):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["artifacts"] = str(results)
    return at.run()


def test_sidebar_choice_survives_page_changes_and_rejects_a_plain_folder(tiny_results, study_split, tmp_path):
    from views import common

    at = _app(tiny_results)
    assert not at.exception
    at.text_input(key=common.TYPED).set_value(str(study_split)).run()
    names = ["kaggle split · study recipe", "clean split · study recipe"]
    for page in ("views/confusion.py", "views/curves.py", "views/overview.py"):  # issue 15, finding 1
        at.switch_page(page).run()
        assert not at.exception and not at.error, page
        assert at.session_state[common.CHOSEN] == [str(study_split), str(tiny_results)]
        chooser = at.multiselect(key=common.PICKED)  # named as in the tables, the typed folder first
        assert [n.split(" · 48 px")[0] for n in chooser.value] == names and at.text_input(key=common.TYPED).value == ""
    assert "split **kaggle**" in " ".join(c.value for c in at.caption)  # single-set pages show the first
    # The Overview opens with the leak, and says what the study's split tests.
    assert at.header[0].value == "How much the study's split flatters each model"
    assert "covering only 3 of its 4 classes" in " ".join(m.value for m in at.markdown)

    at.text_input(key=common.TYPED).set_value(str(tmp_path)).run()  # not a result set: reported, the rest kept
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert f"Not added: {tmp_path}:" in warnings and "no manifest.json" in warnings
    assert not at.error and len(at.multiselect(key=common.PICKED).value) == 2
    assert at.text_input(key=common.TYPED).value == str(tmp_path)  # left where it can be corrected

    at.text_input(key=common.TYPED).set_value("").run()
    at.multiselect(key=common.PICKED).unselect(at.multiselect(key=common.PICKED).value[0]).run()
    assert not at.sidebar.warning and at.session_state[common.CHOSEN] == [str(tiny_results)]
    assert not any("result sets side by side" in h.value for h in at.header)
    at.multiselect(key=common.PICKED).set_value([]).run()
    assert not at.exception and any("Choose a result set" in i.value for i in at.info)


def test_without_a_choice_every_shipped_set_is_chosen(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from views import common

    monkeypatch.delenv("FRUITVEG_ARTIFACTS", raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    assert not at.exception
    shipped = [str(folder) for folder in resultsets.discover()]
    assert at.session_state[common.CHOSEN] == (shipped or [str(common.DEFAULT_ARTIFACTS)])
    assert len(at.multiselect(key=common.PICKED).value) == len(shipped)
    splits = {resultsets.split_policy(artifacts.open_result_set(folder)) for folder in shipped}
    if {resultsets.STUDY_SPLIT, resultsets.CLEAN_SPLIT} <= splits:  # the shipped study split: the leak comes first
        assert at.header[0].value == "How much the study's split flatters each model"


def test_classify_without_weights_names_the_models_that_have_them(tiny_results, tmp_path):
    from core import inference

    dest = shutil.copytree(tiny_results, tmp_path / "partly")
    manifest = artifacts.read_json(dest / artifacts.MANIFEST)
    artifacts.strip_weights(dest)
    stripped = artifacts.read_json(dest / artifacts.MANIFEST)
    # Put the CNN's weights back: a set with some models classifying and the rest for comparison only.
    stripped["models"]["cnn"]["files"][artifacts.WHOLE_MODEL] = manifest["models"]["cnn"]["files"][artifacts.WHOLE_MODEL]
    shutil.copy(tiny_results / "cnn" / artifacts.WHOLE_MODEL, dest / "cnn" / artifacts.WHOLE_MODEL)
    artifacts.write_json(dest / artifacts.MANIFEST, stripped)
    rs = artifacts.open_result_set(dest)
    with pytest.raises(inference.ModelUnavailable, match="carries no weights"):
        inference.load_model(rs, "vgg16")
    classifier, problems = inference.load_classifier(rs)
    assert classifier is not None and set(problems) == set(rs.models) - {"cnn"}

    at = _app(dest)
    at.switch_page("views/classify.py").run()
    assert not at.exception
    assert any("Models with weights in this result set: CNN." in i.value for i in at.info)
    for page in ("views/overview.py", "views/confusion.py", "views/statistics.py", "views/curves.py"):
        at.switch_page(page).run()
        assert not at.exception and not at.error, page

    # A set without any weights chosen first: the other pages show it, Classify the first set with weights.
    bare = shutil.copytree(tiny_results, tmp_path / "bare")
    artifacts.strip_weights(bare)
    at = _app(f"{bare}{os.pathsep}{dest}")
    listed = lambda: " ".join(m.value for m in at.sidebar.markdown)  # noqa: E731
    assert "· no weights — *shown here*" in listed()
    at.switch_page("views/classify.py").run()
    assert not at.exception and not at.error
    assert "· some weights — *shown here*" in listed()
    assert any("Models with weights in this result set: CNN." in i.value for i in at.info)


def _shows_without_error_boxes(page, shot: str, heading: str) -> None:
    import test_browser as tb

    tb.settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0, shot
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()
    assert heading in page.inner_text("body"), shot
    page.get_by_text(heading).first.scroll_into_view_if_needed()  # the comparison view, for a person to look at
    tb.SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(tb.SHOTS / f"multiset-{shot}.png"))


def test_browser_renders_the_comparison_views_with_three_then_two_sets(tiny_results, study_split, same_photos):
    """One server and one session (pages changed through the sidebar, as a person does): three sets on every
    comparison view and Classify, then one set removed with its chip's x and the views that change with two."""
    import test_browser as tb

    if not os.path.exists(tb.CHROMIUM):
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    views = {"Overview": "How much the study's split flatters each model",
             "Training curves": "One model across result sets",
             "Confusion": "Confusion difference", "Statistics": "Result sets compared",
             "Classify": "Classify a photo"}
    with tb.serve(os.pathsep.join(map(str, [study_split, tiny_results, same_photos]))) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=tb.CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            # "/" first: a fresh server's first request to a page's own address runs that page file alone.
            page.goto(f"{url}/")
            _shows_without_error_boxes(page, "3-overview", "How much the study's split flatters each model")
            assert "3 result sets side by side" in page.inner_text("body")
            assert "covering only 3 of its 4 classes" in page.inner_text("body")
            for link, heading in list(views.items())[1:]:
                page.locator('[data-testid="stSidebarNavLink"]', has_text=link).click()
                _shows_without_error_boxes(page, f"3-{link.split()[-1].lower()}", heading)
                if link == "Statistics":  # the two clean sets share their test photos, the study's split not
                    assert "both were tested on the same photos" in page.inner_text("body")
                    assert "the test photos differ" in page.inner_text("body")
                    # Names keep their capitals in the caption (not "exact mcnemar test").
                    assert "(paired bootstrap interval, exact McNemar test)" in page.inner_text("body")
            removed = page.locator('[data-testid="stMultiSelectTagsContainer"] button[aria-label^="Remove"]').last
            removed.click()  # then the views whose layout changes with two sets
            page.locator('[data-testid="stSidebarNavLink"]', has_text="Statistics").click()
            _shows_without_error_boxes(page, "2-statistics", views["Statistics"])
            assert "both were tested on the same photos" not in page.inner_text("body")
            page.locator('[data-testid="stSidebarNavLink"]', has_text="Overview").click()
            _shows_without_error_boxes(page, "2-overview", views["Overview"])
            assert "result sets side by side" not in page.inner_text("body")  # the leak's table holds both
            browser.close()
