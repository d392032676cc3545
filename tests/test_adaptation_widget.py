"""The Train widget's optional 'Adapt to' layer (MADAN alignment), driven as a user drives it (napari, Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import wait_trained

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(train_widget):
    """The shared Train dock plus an unlabelled image of another style (inverted contrast) to adapt to."""
    from segarch.synthetic import Conditions, nuclei

    other, _ = nuclei((64, 64), seed=4, conditions=Conditions(radius=(4.0, 7.0), coverage=0.3, photons=300.0,
                                                              blur=1.0))
    train_widget.viewer.add_image(other.max() - other, name="other microscope")
    train_widget.batch_spin.setValue(2)
    train_widget.steps_spin.setValue(3)
    return train_widget


def test_no_adaptation_unless_a_layer_is_chosen(widget):
    assert widget.adapt_combo.layer() is None  # "none" is preselected
    assert "adapt_to" not in widget.training_arguments()
    widget.adapt_combo.setCurrentText("other microscope")
    arguments = widget.training_arguments()
    assert arguments["adapt_to"] is widget.viewer.layers["other microscope"].data
    assert arguments["adapt_discriminator"] == "per-place"  # segarch.train's default
    widget.adapt_discriminator_combo.setCurrentIndex(widget.adapt_discriminator_combo.findData("spatial"))
    assert widget.training_arguments()["adapt_discriminator"] == "spatial"


def test_train_adapted_to_an_unlabelled_layer(widget, qtbot):
    widget.adapt_combo.setCurrentText("other microscope")
    widget.train_button.click()
    wait_trained(qtbot, widget)
    model = widget.model
    assert model is not None and model.trained, widget.status.text()
    assert "Adapted to unlabelled target images" in model.description
    assert len(widget.plot.steps) == 3


def test_adapting_to_the_training_image_or_a_colour_image_is_reported(widget, qtbot):
    widget.adapt_combo.setCurrentText("cells")
    widget.train_button.click()
    assert "'Adapt to' is the training image" in widget.status.text()
    assert widget.worker is None
    widget.viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="colour", rgb=True)
    widget.adapt_combo.setCurrentText("colour")
    widget.train_button.click()
    wait_trained(qtbot, widget)
    assert "`adapt_to`" in widget.status.text() and "colour channels" in widget.status.text()
