"""A small table of general synonyms: positive evidence for the content-word rule.

Only words that mean the same in any question (not pairs from an evaluation
set): spelling variants, regional words, and the common Chinese synonyms for
everyday things. Word-level similarity from the embedding model covers the rest.
"""

from __future__ import annotations

__all__ = ["same_meaning", "rival"]

_GROUPS = [
    # English
    "photo picture pic image", "movie film", "car automobile vehicle", "holiday vacation", "gift present",
    "faucet tap", "couch sofa", "cellphone phone mobile smartphone", "laptop notebook computer pc",
    "begin start", "finish end complete", "buy purchase", "fix repair", "remove delete erase",
    "big large", "small little tiny", "fast quick rapid", "quickly rapidly", "cheap inexpensive",
    "help assist", "show display", "choose pick select", "make create", "kid child", "kids children",
    "autumn fall", "rubbish trash garbage", "shop store", "author writer", "colour color",
    "tall height high", "old age", "cost price expensive", "heavy weight", "long length", "wide width",
    "deep depth", "big size large", "fast speed quick", "far distance", "hot temperature", "population people",
    "ft feet foot", "tsp teaspoon", "tbsp tablespoon", "km kilometer kilometre", "lb lbs pound", "oz ounce",
    "kg kilogram", "cm centimeter centimetre", "mm millimeter millimetre", "symptom sign", "lower reduce decrease",
    # Chinese
    "番茄 西红柿", "土豆 马铃薯 洋芋", "电脑 计算机", "手机 移动电话", "照片 相片 图片", "截图 截屏",
    "修改 更改", "提高 提升", "预防 防止", "孩子 小孩 儿童", "猫 猫咪", "狗 狗狗", "冬天 冬季", "夏天 夏季",
    "春天 春季", "秋天 秋季", "早上 早晨", "美元 美金", "开车 驾车", "医生 大夫", "喜欢 爱", "查看 查询",
    "汽车 车子", "做法 方法", "多久 多长时间", "号 日", "等于 是",
    "远 距离", "高 高度", "重 重量", "长 长度", "宽 宽度", "快 速度", "深 深度", "贵 价格 价钱",  # 多远 = 距离是多少
    "原因 怎么回事", "处理 解决 怎么办", "干 做",
]
_TABLE: dict[str, frozenset[str]] = {}
for _group in _GROUPS:
    _words = frozenset(_group.split())
    for _w in _words:
        _TABLE[_w] = _TABLE.get(_w, frozenset()) | _words


def same_meaning(a: str, b: str) -> bool:
    """Are ``a`` and ``b`` listed as synonyms?"""
    return b in _TABLE.get(a, ())


# Closed classes: two different members of one never mean the same (a red light is not a yellow one).
_CLASSES = [
    "red orange yellow green blue purple violet pink brown black white grey gray silver gold navy",
    "spring summer autumn fall winter",
    "monday tuesday wednesday thursday friday saturday sunday",
    "january february march april may june july august september october november december",
    "north south east west", "up down", "left right", "top bottom", "front back", "back forward", "previous next",
    "local remote locally remotely", "first last",
    "height length width depth weight age price cost speed distance area population temperature salary",
    "tall long wide deep big heavy old expensive cheap fast far hot cold loud",
    "dog cat horse cow pig sheep goat rabbit bird fish chicken hamster parrot",
    "inbound outbound", "upstairs downstairs", "indoor outdoor", "morning afternoon evening night",
    "breakfast lunch dinner", "yesterday today tomorrow",
    "红 橙 黄 绿 蓝 紫 粉 棕 黑 白 灰 红色 橙色 黄色 绿色 蓝色 紫色 粉色 黑色 白色 灰色 红灯 黄灯 绿灯 红茶 绿茶 白茶 黑茶",
    "春天 夏天 秋天 冬天 春季 夏季 秋季 冬季 春 夏 秋 冬",
    "早饭 午饭 晚饭 早餐 午餐 晚餐",
]
_CLASS_OF: dict[str, set[int]] = {}
for _i, _group in enumerate(_CLASSES):
    for _w in _group.split():
        _CLASS_OF.setdefault(_w, set()).add(_i)


def rival(a: str, b: str) -> bool:
    """Are ``a`` and ``b`` different members of one closed class (colours, seasons, days, directions)?"""
    shared = _CLASS_OF.get(a, set()) & _CLASS_OF.get(b, set())
    return bool(shared) and a != b and not same_meaning(a, b)
