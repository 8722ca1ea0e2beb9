"""Built-in default data: colour photographs bundled inside scikit-image (no download, no data set to fetch).

Fixed split (disjoint, documented so results stay comparable):

- ``TRAIN_PHOTOS``: astronaut (512x512), coffee (400x600), rocket (427x640), hubble_deep_field (872x1000),
  immunohistochemistry (512x512), retina (1411x1411).
- ``EVAL_PHOTOS``: chelsea (300x451), motorcycle_left and motorcycle_right (500x741 each; the two views of
  ``skimage.data.stereo_motorcycle()``).

Only real photographs are used; scikit-image's synthetic images (colorwheel, logo, chessboard, ...) are left out
because flat colours and hard synthetic edges distort SR training and evaluation. This is a small smoke-test /
demo set, not a replacement for DIV2K + Set14 (the paper's data).

Sources and licences, as stated in the scikit-image (0.26) ``skimage.data`` docstrings:

- astronaut: Eileen Collins, NASA Great Images database; "No known copyright restrictions, released into the
  public domain".
- coffee: courtesy of Pikolo Espresso Bar; "No copyright restrictions. CC0 by the photographer (Rachel Michetti)".
- rocket: DSCOVR launch on Falcon 9, SpaceX Photos on Flickr; "released in the public domain" by SpaceX.
- hubble_deep_field: Hubble eXtreme Deep Field, HubbleSite; captured by NASA and "may be freely used in the
  public domain".
- immunohistochemistry: acquired at the Center for Microscopy And Molecular Imaging (CMMI); "No known copyright
  restrictions".
- retina: fundus photograph from Wikimedia Commons (Häggström 2014); "Creative Commons CC0 1.0 Universal Public
  Domain Dedication".
- chelsea: Chelsea the cat; "No copyright restrictions. CC0 by the photographer (Stefan van der Walt)".
- motorcycle_left / motorcycle_right: Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014),
  down-sampled x4 by scikit-image; the docstring states no licence, only the citation, so cite that paper
  when publishing results on these two images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from skimage import data as skdata

from faig_lightning.errors import FaigError

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
EVAL_PHOTOS = ("chelsea", "motorcycle_left", "motorcycle_right")

_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": skdata.astronaut,
    "coffee": skdata.coffee,
    "rocket": skdata.rocket,
    "hubble_deep_field": skdata.hubble_deep_field,
    "immunohistochemistry": skdata.immunohistochemistry,
    "retina": skdata.retina,
    "chelsea": skdata.chelsea,
    "motorcycle_left": lambda: skdata.stereo_motorcycle()[0],
    "motorcycle_right": lambda: skdata.stereo_motorcycle()[1],
}
BUILTIN_PHOTOS = tuple(_LOADERS)


def load_builtin(names: str | Iterable[str]) -> dict[str, np.ndarray]:
    """Load built-in photos by name, in the given order, as uint8 HWC RGB arrays."""
    wanted = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in _LOADERS]
    if unknown:
        raise FaigError(
            f"unknown built-in photo(s) {unknown}; valid names are {list(BUILTIN_PHOTOS)} "
            f"(train split {list(TRAIN_PHOTOS)}, eval split {list(EVAL_PHOTOS)})"
        )
    if not wanted:
        raise FaigError(f"no built-in photos requested; name at least one of {list(BUILTIN_PHOTOS)}")
    return {name: np.ascontiguousarray(_LOADERS[name](), dtype=np.uint8) for name in wanted}
