"""Fruit & Vegetable Model Lab: compare the six classifiers of a result set.

    streamlit run app.py

The sidebar chooses the result set: the shipped ``artifacts/`` by default, or any other folder (also
through the environment variable FRUITVEG_ARTIFACTS).
"""

import streamlit as st

navigation = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/leaderboard:", default=True, url_path="home"),
        st.Page("pages/curves.py", title="Training curves", icon=":material/show_chart:"),
        st.Page("pages/confusion.py", title="Confusion", icon=":material/grid_on:"),
        st.Page("pages/attention.py", title="Attention maps", icon=":material/visibility:"),
        st.Page("pages/statistics.py", title="Statistics", icon=":material/functions:"),
        st.Page("pages/classify.py", title="Classify", icon=":material/photo_camera:"),
        st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
        # The default page lives at "/"; its own name, /overview, must open it too, not "Page not found".
        st.Page("pages/overview.py", title="Overview", url_path="overview", visibility="hidden"),
    ]
)
navigation.run()
