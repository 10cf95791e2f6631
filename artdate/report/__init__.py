"""Stage 4, `artdate report`: metrics, figures and the HTML page of a results CSV."""
