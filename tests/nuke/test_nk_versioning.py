import os
import threading

from nuke_void import versioning


def test_first_version_is_v001(tmp_path):
    root = str(tmp_path / "out")
    path = versioning.claim_next_version(root)
    assert os.path.basename(path) == "v001" and os.path.isdir(path)


def test_never_reuses_a_version_even_after_a_gap(tmp_path):
    for name in ("v001", "v003", "notes", "v2"):
        os.makedirs(str(tmp_path / name))
    assert versioning.existing_versions(str(tmp_path)) == [1, 3]
    assert os.path.basename(versioning.claim_next_version(str(tmp_path))) == "v004"


def test_parallel_claims_get_distinct_folders(tmp_path):
    got = []
    threads = [threading.Thread(target=lambda: got.append(versioning.claim_next_version(str(tmp_path))))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8


def test_default_root_beside_script():
    assert versioning.default_output_root("/show/sh010/comp_v003.nk", "VOID1") == "/show/sh010/void/comp_v003/VOID1"
    assert versioning.default_output_root("", "VOID1") is None
