"""Names LLaVA-NeXT users import (`from llava.constants import IMAGE_TOKEN_INDEX`), kept value-for-value.

IMAGE_TOKEN_INDEX is negative on purpose: it can never collide with a vocabulary id, so the model can find the
placeholder in `input_ids` and must replace it before the embedding lookup.
"""

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"

# config.json key of the tiny random checkpoints that tests and offline smoke runs build
# (llava.testing.tiny_checkpoint): tools warn that answers from them are meaningless.
TINY_MARKER = "llava_scissor_tiny_random"
