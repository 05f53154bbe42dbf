from crrg.text import normalize_for_metrics


def test_documented_steps():
    raw = "Heart size is NORMAL.  No effusion,pneumothorax (left)... 2.5 cm\nXXXX x-ray\tand/or patient's"
    assert normalize_for_metrics(raw) == "heart size is normal . no effusion , pneumothorax ( left ) . 2.5 cm x-ray and/or patient's"


def test_equal_after_normalisation():
    assert normalize_for_metrics("1. No   Effusion.") == normalize_for_metrics("no effusion .")
    assert normalize_for_metrics("\uff2e\uff4f effusion") == "no effusion"  # full-width letters
    assert normalize_for_metrics("XXXX seen", keep_deid=True) == "xxxx seen"
    assert normalize_for_metrics(None) == ""
