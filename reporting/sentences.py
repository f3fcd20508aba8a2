"""The report's sentences about the learning curves: what the numbers of ``curves.json`` say.

The curves stage (:func:`learning_curves.curves.summarise_curves`) finds the
facts (where a feature model matches the pixel forest, what share of its
whole-split accuracy few labels reach, where a CNN crosses the features);
these functions put each into words, the same words in ``curves.json``,
the stage's output and the report.
"""

ALL = "all"  # a size that means the whole training split (params: curves.per_class)


def is_whole_split(size):
    """Whether a size is :data:`ALL`, the whole training split."""
    return isinstance(size, str) and size == ALL


def size_phrase(per_class):
    """``5 images per class``, or ``the whole training split`` for :data:`ALL`."""
    return "the whole training split" if is_whole_split(per_class) else f"{per_class} images per class"


def _at(per_class):
    return "with the whole training split" if is_whole_split(per_class) else f"at {per_class} images per class"


def match_sentence(match, repeats):
    """The report's one sentence from :func:`learning_curves.curves.find_match`'s answer (None when it has none)."""
    if match is None:
        return None
    draws = f"{repeats} draw{'s' if repeats > 1 else ''}"
    target = f"the pixel forest's accuracy at its largest size ({match['target']:.3f} {_at(match['target_per_class'])})"
    if match["matched"]:
        mean = (f"{match['mean']:.3f}, one fit" if is_whole_split(match["per_class"])
                else f"mean {match['mean']:.3f} over {draws}")
        return (f"The best feature model, {match['model']}, first matches {target} with "
                f"{size_phrase(match['per_class'])} ({mean}), "
                f"\"matches\" meaning a mean test accuracy at least that high.")
    return (f"No feature model matches {target} at any size, \"matches\" meaning a mean test accuracy "
            f"over {draws} at least that high; the closest is {match['model']}, "
            f"{match['mean']:.3f} {_at(match['per_class'])}.")


def share_sentence(share):
    """The report's sentence from :func:`learning_curves.curves.find_share`'s answer (None when it has none)."""
    if share is None:
        return None
    sentence = (f"With the whole training split ({share['n_train']} images) the best feature model, "
                f"{share['model']}, scores {share['full']:.3f}")
    reached = [point for point in share["shares"] if point["share"] is not None]
    if not reached:
        return sentence + "."
    first, *rest = reached
    parts = [f"{first['share']:.0%} of it with {first['per_class']} images per class"]
    parts += [f"{point['share']:.0%} with {point['per_class']}" for point in rest]
    return sentence + "; few labels reach " + ", ".join(parts) + "."


def crossover_sentence(crossovers, repeats):
    """The report's sentences from :func:`learning_curves.curves.find_crossovers`' answer, one per CNN (None without one).

    A sentence about models with random weights starts with the warning.
    """
    if not crossovers:
        return None
    spread = f"mean ± standard deviation over {repeats} draw{'s' if repeats > 1 else ''}"
    sentences = []
    for crossover in crossovers:
        who = ("The CNN from scratch" if crossover["classifier"] == "scratch" else "The fine-tuned backbone")
        scores = (f"{crossover['mean']:.3f} ± {crossover['std']:.3f} against {crossover['best_mean']:.3f} ± "
                  f"{crossover['best_std']:.3f} for {crossover['best_model']} ({spread})")
        if crossover["crossed"]:
            sentence = (f"{who}, {crossover['model']}, first matches or beats the best feature model "
                        f"{_at(crossover['per_class'])}: {scores}.")
        else:
            drawn = (f"{crossover['first_per_class']} images per class to the whole training split"
                     if is_whole_split(crossover["per_class"]) else f"{crossover['first_per_class']} to {size_phrase(crossover['per_class'])}")
            sentence = (f"{who}, {crossover['model']}, does not match the best feature model at any size drawn "
                        f"({drawn}); {_at(crossover['per_class'])} it scores {scores}.")
        if crossover["random_weights"]:
            sentence = (f"WARNING: random weights ({', '.join(crossover['random_weights'])}), not pretrained ones: "
                        f"this says nothing about what pretrained features are worth. {sentence}")
        sentences.append(sentence)
    return " ".join(sentences)
