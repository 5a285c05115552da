"""Files written before the one-schema change still load and resume.

``tests/data/run_before_schema`` is a run folder written by equimol at commit 831c3f3 (the ``integrate``
branch before issue 35: ``trainer.compile``, ``tp_options.compile``, ``data.radial_cutoff`` beside
``model.radial_cutoff``), one epoch of a 1-layer ``gaunt`` model with a Gaunt many-body product on 16
3BPA frames; ``expected.json`` holds the energy and forces its ``model.pt`` gave then on frame 0 of
``3bpa/train_300K.xyz``. Its ``config.yaml`` records the paths of the machine that wrote it; the test
copies the folder and points those paths at this machine's copy of the same files.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from test_train_e2e import write_tiny_frames

from equimol.errors import EquimolDeprecationWarning

OLD_RUN = Path(__file__).with_name("data") / "run_before_schema"
WRITTEN_AT = {"data_dir": "/tmp/a/scratch", "shared": "/work/shared/data"}


@pytest.fixture
def old_run(shared_data: Path, tmp_path: Path) -> Path:
    """A copy of the old run folder whose recorded paths are this machine's (the data are the same frames)."""
    write_tiny_frames(shared_data, tmp_path)
    run = Path(shutil.copytree(OLD_RUN, tmp_path / "run"))
    text = (run / "config.yaml").read_text()
    text = text.replace(WRITTEN_AT["data_dir"] + "/run", str(run)).replace(WRITTEN_AT["data_dir"], str(tmp_path))
    (run / "config.yaml").write_text(text.replace(WRITTEN_AT["shared"], str(shared_data)))
    return run


def test_an_old_model_file_loads_and_predicts_what_it_did(shared_data: Path) -> None:
    from equimol.calculator import EquimolCalculator
    from equimol.export import load_model

    expected = json.loads((OLD_RUN / "expected.json").read_text())
    with pytest.warns(EquimolDeprecationWarning, match=r"model\.tp_options\.compile is deprecated"):
        model = load_model(OLD_RUN / "model.pt")
    assert model.config.tp_options == {"strategy": "edge", "compile_edge_product": False}
    atoms = ase.io.read(shared_data / expected["source"], index=expected["frame"])
    atoms.calc = EquimolCalculator(OLD_RUN / "model.pt")
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), expected["forces"], rtol=0, atol=1e-10)


def test_an_old_config_yaml_loads_with_the_new_names(old_run: Path) -> None:
    from equimol.train.config import load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(old_run / "config.yaml")
    notices = sorted(str(w.message).split(" is ")[0] for w in caught if w.category is EquimolDeprecationWarning)
    assert notices == ["model.tp_options.compile", "trainer.compile"]
    assert config.trainer.compile_step is False
    assert config.data["radial_cutoff"] == config.model.radial_cutoff == 4.5


def test_an_old_run_folder_resumes(old_run: Path) -> None:
    """One more epoch from the old checkpoint, through the new loader; the model file is rewritten."""
    from equimol.train.config import load_config
    from equimol.train.run import train

    from equimol.export import load_model

    before = (old_run / "model.pt").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EquimolDeprecationWarning)
        config = load_config(old_run / "config.yaml", ["trainer.max_epochs=2", "trainer.test_after_fit=false"])
        result = train(config, resume=True)
    assert Path(result["model"]) == old_run / "model.pt" and (old_run / "model.pt").read_bytes() != before
    assert load_model(old_run / "model.pt").config.tp_options["compile_edge_product"] is False
