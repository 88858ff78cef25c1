"""Fruit & Vegetable Model Lab: compare the six classifiers of a result set.

    streamlit run app.py

The sidebar chooses the result set: the shipped ``artifacts/`` by default, or any other folder (also
through the environment variable FRUITVEG_ARTIFACTS).
"""

import streamlit as st

navigation = st.navigation(
    [
        st.Page("views/overview.py", title="Overview", icon=":material/leaderboard:", default=True, url_path="home"),
        st.Page("views/curves.py", title="Training curves", icon=":material/show_chart:"),
        st.Page("views/confusion.py", title="Confusion", icon=":material/grid_on:"),
        st.Page("views/attention.py", title="Attention maps", icon=":material/visibility:"),
        st.Page("views/statistics.py", title="Statistics", icon=":material/functions:"),
        st.Page("views/classify.py", title="Classify", icon=":material/photo_camera:"),
        st.Page("views/data.py", title="Data", icon=":material/dataset:"),
        # The default page is served at "/" only, though Streamlit reserves its url_path too ("home" above, which
        # nothing links to): its own name, /overview, must open it as well, not "Page not found".
        st.Page("views/overview.py", title="Overview", url_path="overview", visibility="hidden"),
    ]
)
navigation.run()
