"""The seed-002 ``parallel_split`` pipeline script, unchanged but for the imports."""

from ialtest_package import (
    ialtest_combine_images,
    ialtest_correct_dark,
    ialtest_correct_flat,
    ialtest_split_images,
)

from sgs.dsl import parallel, pipeline


@parallel(iterable="image")
def correct(image, master_dark, master_flat, control_params):  # type: ignore[no-untyped-def]
    image_dark_corr, dark_corr_quality = ialtest_correct_dark(
        image=image, master_dark=master_dark, control_params=control_params
    )

    image_flat_corr, flat_corr_quality = ialtest_correct_flat(
        image=image_dark_corr, master_flat=master_flat, control_params=control_params
    )

    return image_flat_corr, dark_corr_quality, flat_corr_quality


@pipeline(outputs=("corrected_images", "quality"))
def parallel_split(images, master_dark, master_flat, control_params):  # type: ignore[no-untyped-def]
    images_splitted = ialtest_split_images(images=images)
    images_corr_output = correct(
        image=images_splitted, master_dark=master_dark, master_flat=master_flat, control_params=control_params
    )
    images_corr, quality = ialtest_combine_images(inputlist=images_corr_output)
    return images_corr, quality
