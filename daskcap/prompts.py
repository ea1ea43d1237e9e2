"""Prompts, in daskcap's own words.

Variants keep the reference's names so its users' settings carry over.
"""

CAPTION_PROMPTS = {
    "default": (
        "Describe this video in detail. Say what is in the scene, who or what moves "
        "and how, how the camera moves, and how the scene changes from start to end. "
        "Write plain prose, without lists or headings."
    ),
    "av": (
        "This video was recorded by a camera on the dashboard of a moving car. "
        "Describe the drive in detail: how our vehicle and the vehicles around it move "
        "(speed, lane changes, turns, braking), pedestrians and cyclists, lane markings, "
        "traffic signs and signals and their states, any aggressive or unsafe driving, "
        "and landmarks that locate the scene. Write plain prose."
    ),
    "av-surveillance": (
        "This video was recorded by a fixed surveillance camera overlooking a road. "
        "Describe the traffic in detail: how each vehicle moves (speed, lane changes, "
        "turns, stops), pedestrians and cyclists, lane markings, traffic signs and "
        "signals and their states, any aggressive or unsafe driving, and landmarks "
        "that locate the scene. Write plain prose."
    ),
}

# Stage 2: a fresh user turn over the same frames, this text then the stage-1 caption.
STAGE2_PROMPT = (
    "Below is a first description of this video. Watch the video again and rewrite the "
    "description so it is accurate and complete: fix anything it gets wrong, add what "
    "it misses, keep what it gets right. Answer with the improved description only.\n\n"
    "First description:\n"
)

ENHANCE_PROMPTS = {
    "default": (
        "Here is a description of a video clip. Rewrite it as one rich, fluent paragraph: "
        "keep every fact, make the scene, the motion and the order of events vivid and "
        "precise, and add nothing that the description does not support.\n\nDescription:\n"
    ),
    "av-surveillance": (
        "Here is a description of a road scene seen by a fixed surveillance camera. "
        "Rewrite it as one precise paragraph for traffic-safety review: keep every fact "
        "about vehicle motion, pedestrians, lanes, signs and signals, unsafe driving and "
        "landmarks, state them clearly, and add nothing the description does not support."
        "\n\nDescription:\n"
    ),
}


def caption_prompt(prompt_variant: str, prompt_text: str | None) -> str:
    """The prompt a window is captioned with; ``prompt_text`` wins when given."""
    return prompt_text if prompt_text else CAPTION_PROMPTS[prompt_variant]


def stage2_prompt(stage2_prompt_text: str | None, stage1_caption: str) -> str:
    return (stage2_prompt_text or STAGE2_PROMPT).rstrip() + "\n\n" + stage1_caption


def enhance_prompt(prompt_variant: str, prompt_text: str | None, caption: str) -> str:
    return (prompt_text or ENHANCE_PROMPTS[prompt_variant]).rstrip() + "\n\n" + caption
