"""Caption prompts, in daskcap's own words.

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


def caption_prompt(prompt_variant: str, prompt_text: str | None) -> str:
    """The prompt a window is captioned with; ``prompt_text`` wins when given."""
    return prompt_text if prompt_text else CAPTION_PROMPTS[prompt_variant]
