"""``genretag tag --engine ray``: tag a catalogue on Ray Data, with the answers of ``tag``.

    file list (sources) -> decode + windows, Ray tasks on CPUs (decode)
        -> predictor actors, the model loaded once each, GPU when lent (predict)
        -> per file: aggregation and the genre choice (predict) -> Parquet parts (results)

Every stage reuses what ``tag`` runs: the one decoder (genretag.data.audio), the windows
(genretag.inference.WindowCutter), the Predictor, the genre choice and the columns of
genretag.tagger.outputs.Table. Ray is an optional extra (``pip install genretag[ray]``); only
:mod:`genretag.cluster.run` imports it.
"""
