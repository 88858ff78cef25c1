"""The words and numbers the pages show: formatting helpers and the Classify headline."""

from core import formatting, headline


def summary(tops: list[str], ensemble: tuple[str, float]) -> dict:
    return {
        "models": {f"m{i}": {"top": [(name, 0.5)], "group": "fruit", "group_probability": 0.5} for i, name in enumerate(tops)},
        "ensemble": {"top": [ensemble], "group": "vegetable", "group_probability": 0.65},
    }


def test_percentages_intervals_and_differences_share_one_style():
    assert formatting.percent(0.7931) == "79.3 %"
    assert formatting.percent(None) == formatting.MISSING
    assert formatting.percent(float("nan")) == formatting.MISSING
    assert formatting.percent_interval(0.7931, 0.751, 0.83) == "79.3 % [75.1–83.0]"
    assert formatting.interval(0.3126, 0.8322) == "31–83 %"
    assert formatting.interval(None, 0.8) == formatting.MISSING
    assert formatting.signed_points(-0.12150355987055017) == "−12.2 pp"
    assert formatting.signed_points(0.031) == "+3.1 pp"
    assert formatting.mean_spread(0.8036, 0.0081443737, 3) == "80.4 % ± 0.8 (3)"
    assert formatting.mean_spread(0.8, 0.0, 1) == formatting.MISSING
    assert formatting.compact(23_587_712) == "23.6 M"


def test_a_tie_reads_no_majority_and_names_the_average():
    text = headline.headline(summary(["paprika", "paprika", "raddish", "raddish", "apple", "kiwi"], ("raddish", 0.32)))
    assert text.startswith("**No majority**") and "raddish_ (32%)" in text
    assert "2 of 6 models say" not in text
    assert headline.majority(summary(["a", "b", "c"], ("a", 0.4))) is None


def test_all_different_is_no_majority_not_one_model():
    text = headline.headline(summary(["apple", "kiwi", "pear", "corn", "peas", "leek"], ("apple", 0.2)))
    assert "No majority" in text and "1 of 6" not in text


def test_a_plurality_against_the_average_says_both_without_contradiction():
    text = headline.headline(summary(["pear", "pear", "pear", "apple", "apple", "kiwi"], ("apple", 0.41)))
    assert "3 of 6 models say _pear_, but the average" in text and "favours _apple_" in text
    assert headline.agreeing(summary(["pear", "pear", "pear", "apple", "apple", "kiwi"], ("apple", 0.41))) == (2, 6)


def test_agreement_with_the_average():
    assert headline.headline(summary(["kiwi"] * 6, ("kiwi", 0.9))).startswith("**All 6 models say _kiwi_**")
    text = headline.headline(summary(["kiwi"] * 4 + ["pear", "apple"], ("kiwi", 0.7)))
    assert text.startswith("**4 of 6 models say _kiwi_**, and their average agrees (70%)")


def test_the_group_is_worded_as_a_sum_over_classes():
    assert headline.group_phrase("vegetable", 0.65) == "all vegetable classes together 65%"


def test_a_test_photo_is_named_by_file_and_origin_not_by_its_dataset_path():
    # Issue 15, finding 10: 'train/apple/Image_10.jpg' next to "test split" read as a training photo.
    assert formatting.test_photo("train/apple/Image_10.jpg") == "Image_10.jpg (dataset folder train/)"
    origin = formatting.test_photo_origin("train/apple/Image_10.jpg")
    assert origin == "Image_10.jpg, from the dataset's train/ folder; in this result set's test split"
    assert formatting.test_photo("apple/Image_1.jpg") == "Image_1.jpg"  # a dataset without split folders
    assert "train/apple" not in formatting.test_photo_origin("apple/Image_1.jpg")


def test_overview_tables_and_percent_columns_share_the_formatting():
    import pandas as pd

    row = {"model": "CNN", "accuracy": 0.4078, "accuracy_low": 0.354, "accuracy_high": 0.463, "clean_accuracy": 0.4078,
           "top5_accuracy": 0.809, "group_accuracy": 0.764, "loss": 2.0143, "ece": 0.1391, "seed_runs": 1,
           "seed_mean_accuracy": None, "seed_sd_accuracy": None, "reference_accuracy": 0.958,
           "accuracy_vs_reference": -0.5502, "epochs_run": 30, "best_epoch": 28, "parameters": 1_234_567,
           "inference_ms": 3.21, "train_minutes": 1.234}
    table = pd.DataFrame([row, {**row, "model": "VGG16", "accuracy": 0.806, "loss": 0.662}])
    accuracy, best = formatting.overview_display(table, "accuracy")
    cost, _ = formatting.overview_display(table, "cost")
    assert list(accuracy.iloc[0]) == ["CNN", "40.8 % [35.4–46.3]", "40.8 %", "80.9 %", "76.4 %", "2.014", "0.139", "–",
                                      "95.8 % (−55.0 pp)"]
    assert list(cost.iloc[0]) == ["CNN", "30 (28)", "1.2 M", "3", "1.2"]
    assert best["Accuracy [95 % interval]"].tolist() == [False, True] and best["Loss"].tolist() == [False, True]
    shares = formatting.percent_points(pd.DataFrame({"share": [0.5455, 1.0]}), ["share"])
    assert shares["share"].tolist() == [54.55, 100.0] and formatting.PERCENT_FORMAT % 54.55 == "54.5 %"
