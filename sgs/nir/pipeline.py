"""The NIR proto-pipeline exactly as the Euclid SGS paper shows it (seed 000); only the imports differ."""

# The seed's layout is kept on purpose (pipeline developers paste this syntax): no reformatting, no annotations.
# fmt: off
# ruff: noqa: I001
# mypy: disable-error-code="no-untyped-def, no-untyped-call"
from sgs.dsl import pipeline
from sgs.nir.package import runInitialize, badPixMasking, darkSubtract, crRejection, backSubtract
from sgs.nir.package import doAstrom, doResampl, doStack, catalogDetect, catalogPhot


def calibrateDither(ditherExposure, mdb, masterDark):
    initializedExposure = runInitialize(infile=ditherExposure)
    badMaskedExposure = badPixMasking(infile=initializedExposure,
                                      mdbfile=mdb)
    darkSubExposure = darkSubtract(infile=badMaskedExposure,
                                   darkcatfile=masterDark)
    crRemovedExposure = crRejection(image=darkSubExposure)
    bgRemovedExposure = backSubtract(input=crRemovedExposure)
    return bgRemovedExposure

@pipeline(('calDither1', 'calDither2', 'calDither3', 'calDither4', 'stackedImage', 'sourceCatalog'))
def nir_pipeline(dither1, dither2, dither3, dither4, mdb, masterDark, catalog):

    ditherExposure1 = calibrateDither(ditherExposure=dither1, mdb=mdb, masterDark=masterDark)
    ditherExposure2 = calibrateDither(ditherExposure=dither2, mdb=mdb, masterDark=masterDark)
    ditherExposure3 = calibrateDither(ditherExposure=dither3, mdb=mdb, masterDark=masterDark)
    ditherExposure4 = calibrateDither(ditherExposure=dither4, mdb=mdb, masterDark=masterDark)

    calDither1, calDither2, calDither3, calDither4 = doAstrom(dither1=ditherExposure1, dither2=ditherExposure2,
                                                             dither3=ditherExposure3, dither4=ditherExposure4,
                                                             refcat_xml=catalog)

    resampDither1, resampDither2, resampDither3, resampDither4 = doResampl(calDither1=calDither1,
                                                                          calDither2=calDither2,
                                                                          calDither3=calDither3,
                                                                          calDither4=calDither4)

    stackedImage = doStack(resampledme1=resampDither1, resampledme2=resampDither2,
                          resampledme3=resampDither3, resampledme4=resampDither4)

    sourceMask = catalogDetect(image=stackedImage)

    sourceCatalog = catalogPhot(image=stackedImage, source_mask=sourceMask)

    return calDither1, calDither2, calDither3, calDither4, stackedImage, sourceCatalog
