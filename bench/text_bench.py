"""Per-sentence time of ``to_phones`` after warm-up (targets: under 1.5 ms repeated, 1 ms new).

The repeated rows convert the same sentence again and again, so the per-word caches of
the frontend are warm. The ``new`` rows convert each of 240 distinct sentences once, as
64 streams that each say their own sentence do: new words go through jieba's HMM,
pypinyin and the language detector. They are generated from templates and word lists
with a fixed seed, so every run times the same sentences; median and p90 per sentence.

Run from the repository root: ``PYTHONPATH=. python bench/text_bench.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from wyoming_sovits.text import to_phones

SENTENCES = {
    "en (20 words)": (
        "en",
        "The living room lights are now on and the thermostat is set to twenty one "
        "degrees for the evening.",
    ),
    "zh (20 chars)": ("zh", "客厅的灯已经打开了，空调温度设置为二十六度。"),
    "mixed (auto)": ("auto", "帮我打开Apple Music，播放Taylor Swift的新歌。"),
    "zh numbers": ("zh", "3月15日下午3:30，气温25.5℃，湿度60%，电量还剩2格。"),
    "en numbers": ("en", "On 12/25/2024 at 7:30 pm it was -3°C, and 3 kWh cost $1.26."),
}
NEW_SENTENCES = 240  # per language

# Word lists of the generated sentences (home-assistant announcements).
_ZH_ROOMS = (
    "客厅 卧室 主卧 次卧 厨房 书房 阳台 浴室 卫生间 车库 儿童房 餐厅 走廊 玄关 "
    "衣帽间 地下室 阁楼 花园 门口 楼梯间 客房 储藏室 洗衣房 健身房"
).split()
_ZH_DEVICES = (
    "灯 吊灯 台灯 落地灯 空调 窗帘 电视 扫地机器人 加湿器 除湿机 热水器 电风扇 音箱 "
    "门锁 洗衣机 烘干机 洗碗机 冰箱 烤箱 微波炉 电饭煲 净化器 新风系统 地暖 暖气片 "
    "投影仪 摄像头 门铃 插座 排气扇 浴霸 晾衣架 饮水机 咖啡机 电热毯"
).split()
_ZH_NAMES = (
    "张伟 王芳 李娜 刘洋 陈静 杨磊 赵敏 黄丽 周杰 吴强 徐婷 孙浩 胡军 朱琳 郭鹏 "
    "何雪 林峰 罗欣 高翔 梁爽 宋佳 郑凯 谢楠 韩梅 唐宁 冯涛 于晴 董越 萧然 程晨 "
    "爸爸 妈妈 爷爷 奶奶 姥姥 宝宝 小明 小红"
).split()
_ZH_WEATHER = (
    "晴 多云 阴 小雨 中雨 大雨 雷阵雨 阵雨 小雪 大雪 雨夹雪 雾 霾 沙尘 冰雹 晴转多云 多云转阴 阴转小雨"
).split()
_ZH_CITIES = (
    "北京 上海 广州 深圳 杭州 成都 重庆 武汉 西安 南京 苏州 天津 长沙 郑州 青岛 "
    "厦门 昆明 大连 沈阳 哈尔滨 济南 合肥 福州 南昌 贵阳 兰州 拉萨 乌鲁木齐"
).split()
_ZH_EVENTS = (
    "家长会 牙医预约 健身课 钢琴课 视频会议 体检 航班起飞 项目评审 生日聚会 英语补习 "
    "瑜伽练习 交房租 还信用卡 取快递 接孩子放学 倒垃圾 给花浇水 喂猫 遛狗 吃药 "
    "换床单 缴水电费 续签合同 参加婚礼 看电影 买菜 洗车 打疫苗 交作业 复诊"
).split()
_ZH_ADVICE = (
    "出门记得带伞 注意防晒 请多穿衣服 适合户外运动 建议关好门窗 注意保暖 "
    "不宜开窗通风 记得多喝水 路面湿滑请慢行 空气质量良好 紫外线较强 早晚温差较大"
).split()
_ZH_SENSORS = (
    "有人移动 门窗被打开 烟雾浓度偏高 漏水 一氧化碳超标 温度过高 湿度过低 "
    "有陌生人逗留 燃气泄漏 玻璃破碎 大门未关 信箱有新邮件"
).split()
_ZH_REACTIONS = (
    "已自动关闭阀门 已通知物业 已开启录像 请尽快查看 已打开排气扇 已启动警报 "
    "已发送通知到手机 请注意安全 已关闭电源 已为您拍照留存"
).split()
_ZH_STATES = "打开 关闭 调亮 调暗 启动 暂停 开启 切换到睡眠模式 设为节能模式 定时关闭".split()
_ZH_PLACES = "快递柜 门卫室 菜鸟驿站 楼下 前台 丰巢柜 小区门口 邻居家".split()
_ZH_RELATIONS = "同事 老师 朋友 邻居 舅舅 阿姨 客户 医生 表哥 老板".split()
_ZH_MESSAGES = (
    "说晚点到 请您回电 问周末有没有空 说包裹放在门口了 提醒明天开会 说已经出发了 "
    "约您下周吃饭 说孩子感冒了 问钥匙放在哪里 说车停在楼下"
).split()
_ZH_PERIODS = "早上 上午 中午 下午 傍晚 晚上 凌晨".split()
_ZH_WIND = "微风 东风三级 北风四到五级 南风两级 西北风五级 无持续风向".split()

_EN_ROOMS = (
    "living room, kitchen, bedroom, master bedroom, guest room, office, garage, hallway, "
    "bathroom, basement, attic, nursery, dining room, porch, laundry room, patio, den, "
    "front yard, back yard, studio, playroom, pantry, workshop"
).split(", ")
_EN_DEVICES = (
    "lights, ceiling fan, thermostat, heater, air conditioner, blinds, curtains, TV, "
    "speaker, door lock, dishwasher, washing machine, dryer, oven, coffee maker, "
    "dehumidifier, humidifier, air purifier, robot vacuum, sprinkler, garage door, "
    "water heater, doorbell camera, floor lamp, desk lamp, space heater, fridge"
).split(", ")
_EN_NAMES = (
    "Anna, Ben, Chloe, David, Emma, Felix, Grace, Henry, Isla, Jack, Katie, Liam, Maya, "
    "Noah, Olivia, Peter, Quinn, Ruby, Sam, Tara, Umar, Violet, Will, Xavier, Yara, Zoe, "
    "Grandma, Mom, Dad, Priya, Mateo, Sofia, Hiroshi, Ingrid, Lucas, Nadia"
).split(", ")
_EN_EVENTS = (
    "dentist appointment, team meeting, soccer practice, piano lesson, yoga class, "
    "parent teacher conference, flight to Denver, book club, doctor's visit, "
    "birthday party, trash pickup, grocery delivery, haircut, car service, "
    "video call with the school, recycling day, swim lesson, dinner reservation"
).split(", ")
_EN_WEATHER = (
    "sunny, partly cloudy, overcast, light rain, heavy rain, thunderstorms, snow showers, "
    "foggy, windy, clear, drizzle, sleet, hazy"
).split(", ")
_EN_STATES = "on, off, paused, running, locked, unlocked, open, closed, idle, charging".split(", ")
_EN_SENSORS = (
    "motion, a leak, smoke, an open window, the front door opening, a package, "
    "high humidity, carbon monoxide, a person at the gate, the garage door left open"
).split(", ")

_MIXED_APPS = (
    "Apple Music, Spotify, YouTube, Netflix, HomePod, Apple TV, Google Home, Alexa, "
    "Home Assistant, Philips Hue, iPhone, iPad, MacBook, Kindle, Xbox, PlayStation, "
    "Sonos, Roomba, Nest, AirPods, Chromecast, Apple Watch, Fire TV, Zoom, WeChat"
).split(", ")
_MIXED_ARTISTS = (
    "Taylor Swift, Coldplay, Adele, Ed Sheeran, Billie Eilish, Bruno Mars, "
    "Imagine Dragons, Norah Jones, Maroon Five, Lady Gaga, The Beatles, Queen, "
    "Michael Jackson, Justin Bieber, Ariana Grande, Linkin Park, Katy Perry"
).split(", ")
_MIXED_SONGS = (
    "Yellow, Hello, Shape of You, Blinding Lights, Bad Guy, Let It Be, Believer, "
    "Bohemian Rhapsody, Someone Like You, Perfect, Thriller, Numb, Firework, "
    "Viva La Vida, Rolling in the Deep, Shallow, Halo, Happier"
).split(", ")
_MIXED_ENGLISH = (
    "Wi-Fi, Bluetooth, USB, PDF, Email, App, VIP, Party Mode, Movie Mode, Good Night, "
    "Away Mode, Morning Routine, Eco Mode, Turbo"
).split(", ")


def _zh_sentence(rnd: random.Random) -> str:
    room, device, name = rnd.choice(_ZH_ROOMS), rnd.choice(_ZH_DEVICES), rnd.choice(_ZH_NAMES)
    period, hour, minute = rnd.choice(_ZH_PERIODS), rnd.randint(1, 12), rnd.randint(0, 59)
    forms = (
        lambda: f"{room}的{device}已经{rnd.choice(_ZH_STATES)}了。",
        lambda: f"{room}{device}的温度设置为{rnd.randint(16, 30)}度，{rnd.choice(_ZH_ADVICE)}。",
        lambda: (
            f"{name}，{period}{hour}点{minute}分有{rnd.choice(_ZH_EVENTS)}，"
            f"别忘了{rnd.choice(_ZH_EVENTS)}。"
        ),
        lambda: (
            f"现在室外温度{rnd.randint(-10, 38)}℃，湿度{rnd.randint(20, 95)}%，"
            f"{rnd.choice(_ZH_WEATHER)}，{rnd.choice(_ZH_ADVICE)}。"
        ),
        lambda: (
            f"{name}回家了，{room}的{device}已打开，"
            f"{rnd.choice(_ZH_DEVICES)}调到{rnd.randint(1, 5)}档。"
        ),
        lambda: (
            f"提醒：{rnd.randint(1, 12)}月{rnd.randint(1, 28)}日{period}"
            f"{hour}:{minute:02d}{rnd.choice(_ZH_EVENTS)}。"
        ),
        lambda: f"{room}{device}的电量只剩{rnd.randint(2, 30)}%，请及时充电。",
        lambda: f"检测到{room}{rnd.choice(_ZH_SENSORS)}，{rnd.choice(_ZH_REACTIONS)}。",
        lambda: (
            f"您的快递已送达{rnd.choice(_ZH_PLACES)}，"
            f"取件码{rnd.randint(100000, 999999)}，请{period}前取走。"
        ),
        lambda: (
            f"今天{rnd.choice(_ZH_CITIES)}{rnd.choice(_ZH_WEATHER)}，最高气温"
            f"{rnd.randint(10, 38)}度，最低{rnd.randint(-15, 9)}度，{rnd.choice(_ZH_WIND)}。"
        ),
        lambda: f"{name}的{rnd.choice(_ZH_RELATIONS)}刚才打来电话，{rnd.choice(_ZH_MESSAGES)}。",
        lambda: (
            f"{room}的PM2.5是{rnd.randint(5, 300)}，"
            f"{rnd.choice(_ZH_DEVICES)}已经运行了{rnd.randint(2, 90)}分钟。"
        ),
        lambda: (
            f"本月用电{rnd.randint(80, 600)}度，比上个月"
            f"{rnd.choice(['多', '少'])}了{rnd.randint(1, 40)}.{rnd.randint(0, 9)}%。"
        ),
        lambda: f"好的，{name}，正在为您{rnd.choice(_ZH_STATES)}{room}的{device}。",
    )
    return rnd.choice(forms)()


def _en_sentence(rnd: random.Random) -> str:
    room, device, name = rnd.choice(_EN_ROOMS), rnd.choice(_EN_DEVICES), rnd.choice(_EN_NAMES)
    hour, minute = rnd.randint(1, 12), rnd.randint(0, 59)
    clock = f"{hour}:{minute:02d} {rnd.choice(['am', 'pm', 'a.m.', 'p.m.'])}"
    forms = (
        lambda: f"{name}, the {room} {device} is now {rnd.choice(_EN_STATES)}.",
        lambda: (
            f"It's {clock} and the temperature outside is {rnd.randint(-12, 38)} degrees "
            f"with {rnd.choice(_EN_WEATHER)} skies."
        ),
        lambda: f"Reminder: {rnd.choice(_EN_EVENTS)} at {clock} tomorrow.",
        lambda: f"The {device} battery is at {rnd.randint(3, 40)}%, please charge it soon.",
        lambda: (
            f"Good morning, {name}! Today will be {rnd.choice(_EN_WEATHER)} with a high of "
            f"{rnd.randint(5, 35)}°C and a low of {rnd.randint(-10, 15)}°C."
        ),
        lambda: f"I detected {rnd.choice(_EN_SENSORS)} in the {room} at {clock}.",
        lambda: (
            f"The {device} in the {room} has been running for {rnd.randint(2, 180)} minutes "
            f"and used {rnd.randint(1, 9)}.{rnd.randint(0, 9)} kWh."
        ),
        lambda: f"Okay {name}, setting the {room} thermostat to {rnd.randint(60, 78)} degrees.",
        lambda: (
            f"{name} just arrived home, so I turned the {room} {device} {rnd.choice(_EN_STATES)}."
        ),
        lambda: (
            f"Your package from order {rnd.randint(1000, 9999)} was delivered to the "
            f"{room} at {clock}."
        ),
        lambda: (
            f"There are {rnd.randint(2, 9)} items on your shopping list and "
            f"{rnd.choice(_EN_EVENTS)} is on {rnd.randint(1, 12)}/{rnd.randint(1, 28)}."
        ),
        lambda: (
            f"Playing the {rnd.choice(_MIXED_SONGS)} playlist on the {room} speaker at "
            f"{rnd.randint(10, 90)} percent volume."
        ),
    )
    return rnd.choice(forms)()


def _mixed_sentence(rnd: random.Random) -> str:
    room, device, name = rnd.choice(_ZH_ROOMS), rnd.choice(_ZH_DEVICES), rnd.choice(_ZH_NAMES)
    app, artist, song = (
        rnd.choice(_MIXED_APPS),
        rnd.choice(_MIXED_ARTISTS),
        rnd.choice(_MIXED_SONGS),
    )
    forms = (
        lambda: f"帮我打开{app}，播放{artist}的{song}。",
        lambda: f"好的，正在{room}的{app}上播放{artist}的新歌。",
        lambda: f"{name}，你的{app}电量只剩{rnd.randint(3, 30)}%了，请及时充电。",
        lambda: (
            f"已经为{room}开启{rnd.choice(_MIXED_ENGLISH)}，{device}也{rnd.choice(_ZH_STATES)}了。"
        ),
        lambda: f"{room}的{app}连不上{rnd.choice(_MIXED_ENGLISH)}，请检查{device}附近的路由器。",
        lambda: f"{name}用{app}发来消息：{rnd.choice(_ZH_MESSAGES)}。",
        lambda: f"检测到{room}{rnd.choice(_ZH_SENSORS)}，已经通过{app}通知{name}。",
        lambda: f"现在播放的是{artist}的{song}，音量调到{rnd.randint(10, 90)}。",
        lambda: (
            f"{rnd.choice(_ZH_PERIODS)}好{name}，今天{rnd.choice(_ZH_WEATHER)}，{app}提醒你{rnd.choice(_ZH_EVENTS)}。"
        ),
        lambda: f"把{room}的{device}加入{rnd.choice(_MIXED_ENGLISH)}场景，并同步到{app}。",
    )
    return rnd.choice(forms)()


def new_sentences(language: str, count: int = NEW_SENTENCES, seed: int = 0) -> list[str]:
    """``count`` distinct generated sentences of ``"zh"``, ``"en"`` or ``"mixed"`` text."""
    make = {"zh": _zh_sentence, "en": _en_sentence, "mixed": _mixed_sentence}[language]
    rnd = random.Random(f"{language}-{seed}")
    sentences: dict[str, None] = {}
    while len(sentences) < count:
        sentences[make(rnd)] = None
    return list(sentences)


NEW_ROWS = {
    "zh new": ("zh", "zh"),
    "mixed new": ("auto", "mixed"),
    "en new": ("en", "en"),
}


def _time_ms(text: str, language: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        to_phones(text, language)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _p90(times: list[float]) -> float:
    return statistics.quantiles(times, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    # Warm-up: dictionaries and models load here, on text of none of the timed sentences.
    for language, text in (("zh", "你好。"), ("auto", "你好, hello."), ("en", "Hello there.")):
        to_phones(text, language)
    for name, (language, generated) in NEW_ROWS.items():
        times = [t for text in new_sentences(generated) for t in _time_ms(text, language, 1)]
        print(
            f"{name:15s} median {statistics.median(times):6.2f} ms  p90 {_p90(times):6.2f} ms"
            f"  ({len(times)} sentences, each once)"
        )
    for name, (language, text) in SENTENCES.items():
        _time_ms(text, language, 3)  # warm-up
        times = _time_ms(text, language, args.repeat)
        print(f"{name:15s} median {statistics.median(times):6.2f} ms  max {max(times):6.2f} ms")


if __name__ == "__main__":
    main()
