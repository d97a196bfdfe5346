"""`python -m image_search_assets.cli`, as the `image-search` console script."""

import sys

from image_search_assets.cli import main

sys.exit(main())
